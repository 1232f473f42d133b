"""The flowno names a program on flowno-io needs, with types a strict type checker can use.

``flowno`` 0.1.19 ships no ``py.typed`` marker, so ``mypy --strict`` rejects ``from flowno import
...`` (``import-untyped``) and calls every ``@node`` function untyped. Import these names from here
instead: at run time they are flowno's own objects (``sleep`` and ``EventLoop`` are flowno-io's
versions, see :func:`flowno_io.sleep`); for a type checker they carry the signatures below.

Example:
    >>> from flowno_io.flowno import EventLoop, FlowHDL, node, spawn
    >>> @node
    ... async def Double(x: int) -> int:
    ...     return 2 * x
    >>> with FlowHDL() as f:
    ...     f.double = Double(21)
    >>> f.run_until_complete()
    >>> f.double.get_data()
    (42,)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .io.flowno_compat import EventLoop as _FlownoIoEventLoop
from .io.flowno_compat import TaskHandle as _TaskHandle
from .io.flowno_compat import sleep as _flowno_io_sleep

__all__ = [
    "DraftNode",
    "EventLoop",
    "FlowHDL",
    "Stream",
    "TaskHandle",
    "current_event_loop",
    "node",
    "sleep",
    "spawn",
]

_T = TypeVar("_T")

if TYPE_CHECKING:

    class TaskHandle(Generic[_T]):
        """A spawned task (``await spawn(...)`` returns it); ``await handle.join()`` waits for it."""

        def join(self) -> Coroutine[Any, Any, _T]: ...
        def cancel(self) -> bool: ...
        @property
        def is_finished(self) -> bool: ...

    class EventLoop:
        """flowno's event loop (flowno-io's subclass: it can be interrupted from other threads)."""

        @overload
        def run_until_complete(
            self,
            root_task: Coroutine[Any, Any, _T],
            join: Literal[True],
            wait_for_spawned_tasks: bool = True,
        ) -> _T: ...
        @overload
        def run_until_complete(
            self,
            root_task: Coroutine[Any, Any, Any],
            join: bool = False,
            wait_for_spawned_tasks: bool = True,
        ) -> Any: ...
        def run_until_complete(
            self,
            root_task: Coroutine[Any, Any, Any],
            join: bool = False,
            wait_for_spawned_tasks: bool = True,
        ) -> Any: ...

    class Stream(Generic[_T]):
        """A stream input of a node declared with ``@node(stream_in=[...])``: ``async for`` it."""

        def __aiter__(self) -> AsyncIterator[_T]: ...
        async def __anext__(self) -> _T: ...

    class DraftNode:
        """A node placed in a :class:`FlowHDL` (what calling a ``@node`` function returns)."""

        def get_data(self, run_level: int = 0) -> tuple[Any, ...] | None: ...
        def output(self, output_index: int) -> Any: ...

    class FlowHDL:
        """``with FlowHDL() as f: f.name = SomeNode(...)``, then ``f.run_until_complete()``."""

        def __enter__(self) -> FlowHDL: ...
        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool: ...
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...
        def run_until_complete(
            self,
            stop_at_node_generation: Any = (),
            terminate_on_node_error: bool = True,
        ) -> None: ...

    _NodeFunction = Callable[..., Coroutine[Any, Any, Any]] | Callable[..., AsyncIterator[Any]]

    @overload
    def node(func: _NodeFunction, /) -> Callable[..., DraftNode]: ...
    @overload
    def node(
        *, multiple_outputs: bool | None = None, stream_in: list[str] = ...
    ) -> Callable[[_NodeFunction], Callable[..., DraftNode]]: ...
    def node(
        func: _NodeFunction | None = None,
        /,
        *,
        multiple_outputs: bool | None = None,
        stream_in: list[str] = ...,
    ) -> Any: ...

    async def spawn(task: Coroutine[Any, Any, _T]) -> TaskHandle[_T]:
        """Start ``task`` on the running loop: ``handle = await spawn(task)``."""

    def current_event_loop() -> EventLoop | None:
        """The running flowno loop, or ``None`` outside one."""

    async def sleep(seconds: float) -> None:
        """Wait ``seconds`` (flowno-io's sleep: never ties on flowno's sleep heap)."""

else:
    from flowno import DraftNode, FlowHDL, Stream, current_event_loop, node, spawn

    EventLoop = _FlownoIoEventLoop
    TaskHandle = _TaskHandle
    sleep = _flowno_io_sleep

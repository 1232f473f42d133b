"""Running a coroutine step by step: start it inline, and hand it to a task only if it waits."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from types import coroutine
from typing import Any, TypeVar

__all__ = ["resume"]

T = TypeVar("T")


@coroutine
def resume(started: Coroutine[Any, Any, T], command: Any) -> Generator[Any, Any, T]:
    """Go on running ``started`` in the current task; it has just yielded ``command``.

    The caller began the coroutine with ``started.send(None)`` to see whether it finishes without
    waiting (most do). When it yielded a loop command instead, ``await resume(started, command)``
    relays that command to the loop and every later one, and results and exceptions back, as
    ``yield from`` would, and returns the coroutine's result.
    """
    while True:
        try:
            value = yield command
        except BaseException as exc:
            try:
                command = started.throw(exc)
            except StopIteration as stop:
                result: T = stop.value
                return result
        else:
            try:
                command = started.send(value)
            except StopIteration as stop:
                result = stop.value
                return result

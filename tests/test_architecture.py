"""The layer rule of docs/ARCHITECTURE.md, and the public surface, as tests.

Layers (lowest first): ``_errors`` → ``protocol/`` (sans-IO) and ``io/`` (the seam over flowno) →
``server/`` and ``client/`` → ``service/``. A module imports only from its own layer or below;
``protocol`` and ``io`` do not import each other, nor ``server`` and ``client``. Only
``io/flowno_compat.py`` touches flowno's internals (``flowno.core``).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import flowno_io
import flowno_io.service
import flowno_io.sse
import flowno_io.testing

PACKAGE = pathlib.Path(flowno_io.__file__).parent
RANK = {"_errors": 0, "protocol": 1, "io": 1, "server": 2, "client": 2, "service": 3}
#: Pairs of layers of equal rank that must not import each other.
SEPARATE = {frozenset({"protocol", "io"}), frozenset({"server", "client"})}
#: The package's own top-level modules that re-export the public API (they may import anything).
FACADES = {"__init__", "flowno", "sse", "testing"}


def _layer(parts: tuple[str, ...]) -> str:
    return parts[0] if parts[0] in RANK else "__root__"


def _imports(path: pathlib.Path) -> list[tuple[tuple[str, ...], int]]:
    """(absolute module path inside flowno_io, line) for each flowno_io import in ``path``."""
    own = path.relative_to(PACKAGE).with_suffix("").parts
    package = own[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + tuple(node.module.split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == "flowno_io":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            names = [alias.name for alias in node.names]
            if not target:  # ``from .. import x``: x are submodules or names of the package root
                target = ("__init__",)
            found.extend([(target, node.lineno)] if target else [((name,), node.lineno) for name in names])
    return found


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_or_below(path: pathlib.Path) -> None:
    own = path.relative_to(PACKAGE).with_suffix("").parts
    layer = _layer(own)
    if layer == "__root__" and own[0] in FACADES:
        return
    for target, line in _imports(path):
        other = _layer(target)
        if other == "__root__":
            assert layer == "service", f"{path.name}:{line} imports the package root {target}"
            continue
        assert RANK[other] <= RANK[layer], f"{path.name}:{line}: {layer} imports {other} (a higher layer)"
        assert frozenset({layer, other}) not in SEPARATE, f"{path.name}:{line}: {layer} imports {other}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_flowno_compat_touches_flowno_internals(path: pathlib.Path) -> None:
    if path.name == "flowno_compat.py":
        return
    for node in ast.walk(ast.parse(path.read_text())):
        module = node.module if isinstance(node, ast.ImportFrom) else None
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in [module or "", *names]:
            assert not name.startswith("flowno.core"), f"{path.name}:{node.lineno} imports {name}"


def test_modules_stay_small_enough_to_read() -> None:
    too_long = {
        str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 900
    }
    assert not too_long


PUBLIC = {
    flowno_io: {
        "ClosedResourceError", "ConnectError", "ConnectTimeout", "ErrStreamingResponse", "EventLoop",
        "EventSourceResponse", "HTTPException", "HTTPStatusError", "Headers", "HttpClient", "HttpError",
        "HttpServer", "LocalProtocolError", "NetworkError", "OkStreamingResponse", "PoolTimeout",
        "ProtocolError", "ReadError", "ReadTimeout", "RemoteProtocolError", "Request", "Response",
        "ResponseWriter", "SSEDecoder", "ServerSentEvent", "SocketStream", "StreamInterrupted",
        "StreamingResponse", "Subscription", "Timeout", "TimeoutError", "TooLargeError",
        "TooManyRedirects", "Topic", "TotalTimeout", "WriteError", "WriteTimeout", "cancel",
        "open_tcp_stream", "run", "sleep", "streaming_response_is_ok",
    },
    flowno_io.sse: {"DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent", "encode_comment", "encode_event"},
    flowno_io.service: {
        "Handler", "RouteTable", "ServiceOptions", "add_service_arguments", "json_error", "options_from",
        "run_service",
    },
}  # fmt: skip


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_public_surface_keeps_every_name(module: object) -> None:
    exported = set(module.__all__)  # type: ignore[attr-defined]
    assert PUBLIC[module] <= exported, f"removed from {module.__name__}: {PUBLIC[module] - exported}"  # type: ignore[index]
    for name in exported:
        assert getattr(module, name, None) is not None, f"{module.__name__}.{name} is in __all__ but missing"


def test_the_seed_api_ports_by_changing_the_import() -> None:
    """``flowno.io``'s names exist with the same shape (the seed API)."""
    from flowno_io import ErrStreamingResponse, Headers, HttpClient, HttpServer, OkStreamingResponse, Response

    for method in ("get", "post", "request", "stream_get", "stream_post", "stream_request"):
        assert callable(getattr(HttpClient, method)), method
    for method in ("serve", "handle_client"):
        assert callable(getattr(HttpServer, method)), method
    assert Headers and Response and OkStreamingResponse and ErrStreamingResponse

"""Mistakes are caught where they are made, with an error that names them (issue 14).

Routes, ports, server limits and client options are checked at definition time; numbers out of
range in the services answer 400 naming the parameter; ``Response.json`` names the value orjson
cannot encode; a handler that forgets ``await`` and a client driven by asyncio get errors that say
what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from echo_service.app import build_server as build_echo
from flowno_io import HttpClient, HttpServer, Request, Response, Timeout
from flowno_io.server.routing import Router
from flowno_io.service import RouteTable
from stream_service.app import build_server as build_stream

# -- routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "methods", "error", "words"),
    [
        ("/users", "GET", TypeError, ["methods must be a list", "not the string 'GET'"]),
        ("/users", b"GET", TypeError, ["not bytes"]),
        ("/users", 7, TypeError, ["methods must be a list", "not int"]),
        ("/users", [7], TypeError, ["a method name must be a str"]),
        ("/users", ["GET POST"], ValueError, ["'GET POST' is not an HTTP method name"]),
        ("/users", ["G(E)T"], ValueError, ["not an HTTP method name"]),
        ("/users", [], ValueError, ["methods is empty"]),
        ("/u/{id:float}", None, ValueError, ["unknown converter 'float'", "'{id:float}'", "str, int, path"]),
        ("/u/{id", None, ValueError, ["unbalanced '{'"]),
        ("/u/id}", None, ValueError, ["unbalanced '}'"]),
        ("/u/{{id}}", None, ValueError, ["unbalanced '{'"]),
        ("/u/{1bad}", None, ValueError, ["invalid parameter name '1bad'"]),
        ("/u/{}", None, ValueError, ["invalid parameter name ''"]),
        ("/u/{a-b}", None, ValueError, ["invalid parameter name 'a-b'"]),
        ("/u/{id}/{id}", None, ValueError, ["parameter 'id' appears twice"]),
        ("users", None, ValueError, ["must start with '/'"]),
        (b"/users", None, TypeError, ["must be a str"]),
    ],
)
def test_bad_routes_raise_naming_the_mistake(
    pattern: Any, methods: Any, error: type[Exception], words: list[str]
) -> None:
    def handler(request: Request) -> str:
        return ""

    adders: list[Callable[[], object]] = [
        lambda: Router().add(pattern, handler, methods),
        lambda: HttpServer("127.0.0.1", 0).add_route(pattern, handler, methods),
        lambda: HttpServer("127.0.0.1", 0).route(pattern, methods)(handler),
        lambda: RouteTable("t", access_log=False).route(pattern, methods)(handler),
    ]
    for add in adders:
        with pytest.raises(error) as caught:
            add()
        for word in words:
            assert word in str(caught.value)


def test_good_routes_still_work() -> None:
    router: Router[str] = Router()
    router.add("/u/{id:int}/{rest:path}", "h", methods=["get", "PATCH", "M-SEARCH"])
    router.add("/v/{name}", "v", methods=("GET",))
    assert router.match("GET", "/u/3/a/b") == ("h", {"id": 3, "rest": "a/b"})
    assert router.match("M-SEARCH", "/u/3/x") == ("h", {"id": 3, "rest": "x"})
    assert router.match("HEAD", "/v/x") == ("v", {"name": "x"})


# -- server ports and limits ------------------------------------------------------------------


@pytest.mark.parametrize("port", [70000, -1, 65536])
def test_port_out_of_range_raises(port: int) -> None:
    with pytest.raises(ValueError, match="port must be within 0-65535"):
        HttpServer("127.0.0.1", port)


@pytest.mark.parametrize("port", ["8080", 8080.0, True, None])
def test_port_of_wrong_type_raises(port: Any) -> None:
    with pytest.raises(TypeError, match="port must be an int"):
        HttpServer("127.0.0.1", port)


def test_bind_checks_a_port_set_after_construction() -> None:
    server = HttpServer("127.0.0.1", 0)
    server.port = 70000  # before the fix, bind() bound 70000 % 65536 = 4464
    with pytest.raises(ValueError, match="port must be within 0-65535"):
        server.bind()


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"max_body_bytes": "1M"}, TypeError, "max_body_bytes must be an int"),
        ({"max_body_bytes": -1}, ValueError, "max_body_bytes must be at least 0"),
        ({"max_headers": 0}, ValueError, "max_headers must be at least 1"),
        ({"max_connections": 0}, ValueError, "max_connections must be at least 1"),
        ({"keepalive_timeout": "5"}, TypeError, "keepalive_timeout must be a number of seconds"),
        ({"write_timeout": -1}, ValueError, "write_timeout must be >= 0"),
        ({"shutdown_grace": float("nan")}, ValueError, "shutdown_grace must be >= 0"),
    ],
)
def test_bad_server_options_raise(options: dict[str, Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        HttpServer("127.0.0.1", 0, **options)


def test_host_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="host must be a str"):
        HttpServer(("127.0.0.1", 80), 0)  # type: ignore[arg-type]


# -- client options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"timeout": "5"}, TypeError, "timeout must be a Timeout, seconds"),
        ({"timeout": -1}, ValueError, "timeout must be"),
        ({"timeout": Timeout(connect="1")}, TypeError, "timeout.connect must be seconds"),  # type: ignore[arg-type]
        ({"timeout": Timeout(read=-2)}, ValueError, "timeout.read must be seconds"),
        ({"max_connections_per_host": 0}, ValueError, "max_connections_per_host must be an int >= 1"),
        ({"max_connections_per_host": "10"}, TypeError, "max_connections_per_host must be an int"),
        ({"keepalive_expiry": None}, TypeError, "keepalive_expiry must be seconds"),
        ({"follow_redirects": "yes"}, TypeError, "follow_redirects must be True or False"),
        ({"max_redirects": -1}, ValueError, "max_redirects must be an int >= 0"),
        ({"max_header_bytes": 1.5}, TypeError, "max_header_bytes must be an int"),
        ({"max_body_bytes": "10MB"}, TypeError, "max_body_bytes must be an int"),
        ({"verify": None}, TypeError, "verify must be True, False"),
        ({"base_url": b"http://x"}, TypeError, "base_url must be a str"),
        ({"user_agent": 1}, TypeError, "user_agent must be a str"),
    ],
)
def test_bad_client_options_raise_at_construction(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        HttpClient(**options)


def test_good_client_options_are_accepted() -> None:
    HttpClient(timeout=5)
    HttpClient(timeout=0.5, max_connections_per_host=None, max_body_bytes=None, follow_redirects=True)
    HttpClient(timeout=None, verify=False, base_url="http://127.0.0.1:1")
    HttpClient(timeout=Timeout(connect=1, read=None))


def test_client_under_asyncio_names_flowno_event_loop() -> None:
    client = HttpClient()
    with pytest.raises(RuntimeError) as caught:
        asyncio.run(client.get("http://127.0.0.1:9/"))
    message = str(caught.value)
    assert "flowno event loop" in message and "flowno.EventLoop" in message
    assert "bad yield" not in message
    with pytest.raises(RuntimeError, match=r"flowno\.EventLoop"):
        asyncio.run(client.stream_get("http://127.0.0.1:9/"))


# -- Response.json -----------------------------------------------------------------------------


def test_response_json_names_the_integer_orjson_cannot_encode() -> None:
    with pytest.raises(TypeError) as caught:
        Response.json({"n": 2**70})
    assert "data['n'] = 1180591620717411303424" in str(caught.value)
    assert "64 bits" in str(caught.value)
    with pytest.raises(TypeError, match=r"data\['a'\]\[1\]\['b'\] = -18446744073709551616"):
        Response.json({"a": [0, {"b": -(2**64)}]})


def test_response_json_names_other_unencodable_values() -> None:
    with pytest.raises(TypeError, match=r"data\['s'\] = \{1\}: set is not JSON serializable"):
        Response.json({"s": {1}})
    with pytest.raises(TypeError, match="the key 1 of data"):
        Response.json({1: "x"})
    assert (
        Response.json({"n": 2**64 - 1, "m": -(2**63)}).body
        == b'{"n":18446744073709551615,"m":-9223372036854775808}'
    )


# -- services: numbers out of range are a 400 naming the parameter ----------------------------


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


HUGE = "99999999999999999999999999"


@pytest.mark.parametrize(
    ("path", "param"),
    [
        (f"/bytes/{HUGE}", "n"),
        (f"/delay/{HUGE}", "ms"),
        (f"/status/{HUGE}", "code"),
        (f"/bytes/1?seed={HUGE}0000000000", "seed"),
        ("/bytes/" + "9" * 5000, "n"),  # beyond int()'s 4,300-digit limit
    ],
)
def test_echo_numbers_out_of_range_are_400_naming_the_parameter(
    serve: Callable[[HttpServer], str], path: str, param: str
) -> None:
    url = serve(build_echo("127.0.0.1", 0))
    status, _, body = _get(url + path)
    assert status == 400
    error = json.loads(body)
    assert error["status"] == 400 and error["param"] == param
    assert param in error["error"] and "within" in error["error"]


@pytest.mark.parametrize(
    ("query", "param"),
    [(f"size={HUGE}", "size"), (f"count={HUGE}", "count"), (f"interval_ms={HUGE}", "interval_ms")],
)
def test_stream_numbers_out_of_range_are_400_naming_the_parameter(
    serve: Callable[[HttpServer], str], query: str, param: str
) -> None:
    url = serve(build_stream("127.0.0.1", 0))
    status, _, body = _get(f"{url}/events?{query}")
    assert status == 400
    error = json.loads(body)
    assert error == {"error": error["error"], "status": 400, "param": param, "value": HUGE}
    status, _, body = _get(f"{url}/ticker?count={HUGE}")
    assert status == 400 and json.loads(body)["param"] == "count"


# -- a handler that forgets await --------------------------------------------------------------


def test_handler_returning_an_unawaited_coroutine_is_named(
    serve: Callable[[HttpServer], str], caplog: pytest.LogCaptureFixture
) -> None:
    server = HttpServer("127.0.0.1", 0)

    @server.route("/echo", methods=["POST"])
    async def echo_body(request: Request) -> Any:
        return request.json()  # forgot await

    url = serve(server)
    with caplog.at_level(logging.ERROR, logger="flowno_io.server"):
        request = urllib.request.Request(url + "/echo", data=b"{}", method="POST")
        status, _, _ = _get(request)  # type: ignore[arg-type]
    assert status == 500
    messages = "\n".join(str(record.exc_info[1]) for record in caplog.records if record.exc_info)
    assert "handler test_handler_returning_an_unawaited_coroutine_is_named.<locals>.echo_body" in messages
    assert "Request.json" in messages and "missing 'await'" in messages
    assert "just-started coroutine" not in messages


def test_service_handler_returning_an_unawaited_coroutine_is_named(
    serve: Callable[[HttpServer], str], caplog: pytest.LogCaptureFixture
) -> None:
    server = HttpServer("127.0.0.1", 0)
    table = RouteTable("svc", access_log=False)

    @table.route("/later", methods=["GET"])
    async def later(request: Request) -> Any:
        return request.body()  # forgot await

    table.install(server)
    url = serve(server)
    with caplog.at_level(logging.ERROR, logger="svc.errors"):
        status, _, body = _get(url + "/later")
    assert status == 500 and json.loads(body) == {"error": "internal server error", "status": 500}
    messages = "\n".join(str(record.exc_info[1]) for record in caplog.records if record.exc_info)
    assert ".later returned a coroutine (Request.body)" in messages and "missing 'await'" in messages

"""HttpClient and HttpServer in flowno ``@node`` flows (``docs/flows.md``).

The services run as subprocesses (a flow runs its own event loop in the test's thread, and flowno
allows one loop per process at a time).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from service_process import ServiceProcess, start_service

from flowno_io import (
    EventSourceResponse,
    HttpClient,
    HttpServer,
    Request,
    ServerSentEvent,
    Topic,
    sleep,
    streaming_response_is_ok,
)
from flowno_io.flowno import FlowHDL, Stream, node, spawn


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = start_service("echo_service", tmp_path_factory.mktemp("echo"))
    try:
        yield service.url
    finally:
        service.stop()


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service("stream_service", tmp_path_factory.mktemp("stream"), "--tokens-per-second", "200")
    try:
        yield service
    finally:
        service.stop()


def test_http_client_requests_inside_nodes(echo: str) -> None:
    client = HttpClient()

    @node
    async def Fetch(word: str) -> dict[str, Any]:
        response = await client.get(f"{echo}/echo", params={"word": word})
        response.raise_for_status()
        body: dict[str, Any] = response.decode_json()
        return body

    @node
    async def Combine(first: dict[str, Any], second: dict[str, Any]) -> str:
        return f"{first['query']['word']} {second['query']['word']}"

    with FlowHDL() as f:
        f.first = Fetch("hello")
        f.second = Fetch("flows")
        f.both = Combine(f.first, f.second)
    f.run_until_complete()
    assert f.both.get_data() == ("hello flows",)
    assert client.pool.connections_opened <= 2  # pooled and shared between the nodes


def test_requests_overlap_when_spawned_inside_one_node(echo: str) -> None:
    """Whether independent nodes overlap is up to flowno's resolver (in 0.1.19 the first node a
    flow picks runs alone); requests spawned inside one node always do."""
    client = HttpClient()
    in_flight: list[int] = []
    most = [0]

    async def delayed(ms: int) -> int:
        in_flight.append(ms)
        most[0] = max(most[0], len(in_flight))
        response = await client.get(f"{echo}/delay/{ms}")
        in_flight.remove(ms)
        return int(response.decode_json()["delay_ms"])

    @node
    async def SlowPair(first: int, second: int) -> int:
        tasks = [await spawn(delayed(ms)) for ms in (first, second)]
        return sum([await task.join() for task in tasks])

    @node
    async def Double(total: int) -> int:
        return 2 * total

    with FlowHDL() as f:
        f.pair = SlowPair(300, 301)
        f.double = Double(f.pair)
    f.run_until_complete()
    assert f.double.get_data() == (1202,)
    assert most[0] == 2


def test_streaming_node_consumes_the_chat_stream_chunk_by_chunk(stream: ServiceProcess) -> None:
    events: list[tuple[str, str]] = []

    @node
    async def ChatTokens(prompt: str) -> AsyncIterator[str]:
        response = await HttpClient().stream_post(
            f"{stream.url}/v1/chat/completions",
            json={
                "model": "demo",
                "stream": True,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": prompt}],
            },
        )
        assert streaming_response_is_ok(response)
        async for chunk in response.body:
            token = chunk["choices"][0]["delta"].get("content")
            if token:
                events.append(("yield", token))
                yield token
        events.append(("end", ""))

    @node(stream_in=["tokens"])
    async def Collect(tokens: Stream[str]) -> list[str]:
        seen = []
        async for token in tokens:
            events.append(("got", token))
            seen.append(token)
        return seen

    with FlowHDL() as f:
        f.tokens = ChatTokens("tell me about flows")
        f.collected = Collect(f.tokens)
    f.run_until_complete()
    (collected,) = f.collected.get_data()
    assert len(collected) == 10
    assert f.tokens.get_data() == ("".join(collected),)  # the streaming node's value: the chunks joined
    # Chunk by chunk: the consumer saw the first token before the producer read the second one
    # (and long before the stream ended), not the whole reply at once.
    kinds = [kind for kind, _ in events]
    assert kinds.index("got") < [i for i, kind in enumerate(kinds) if kind == "yield"][1]
    assert kinds[-1] in ("end", "got") and kinds.index("got") < kinds.index("end")


def test_a_flow_serves_its_streaming_node_as_sse() -> None:
    topic: Topic[ServerSentEvent] = Topic()
    server = HttpServer("127.0.0.1", 0)
    server.bind()

    @server.route("/tokens", methods=["GET"])
    def tokens_endpoint(request: Request) -> EventSourceResponse:
        return EventSourceResponse(topic.subscribe())

    @node
    async def Serve() -> int:
        await spawn(server.serve())
        return server.port

    @node
    async def Words(port: int) -> AsyncIterator[str]:
        while topic.subscribers < 2:
            await sleep(0.01)
        for word in ["flows ", "served ", "as ", "SSE"]:
            yield word

    @node(stream_in=["words"])
    async def Publish(words: Stream[str]) -> int:
        count = 0
        async for word in words:
            topic.publish(ServerSentEvent(word, id=str(count)))
            count += 1
        topic.close()
        return count

    closed: list[int] = []

    @node
    async def Listen(port: int) -> list[str]:
        response = await HttpClient().stream_get(f"http://127.0.0.1:{port}/tokens")
        assert streaming_response_is_ok(response)
        received = [data async for data in response.body]
        closed.append(port)
        if len(closed) == 2:
            await server.close()
        return received

    with FlowHDL() as f:
        f.serve = Serve()
        f.words = Words(f.serve)
        f.publish = Publish(f.words)
        f.first = Listen(f.serve)
        f.second = Listen(f.serve)
    f.run_until_complete()
    assert f.publish.get_data() == (4,)
    assert f.first.get_data() == f.second.get_data() == (["flows ", "served ", "as ", "SSE"],)


# The upstream limit (docs/flows.md, docs/flowno-upstream.md): a flow run inside a handler of a
# serving loop freezes that loop, and requests arriving meanwhile are reset. Run in a subprocess:
# it leaves the process's flowno selector broken.
_FLOW_IN_HANDLER = textwrap.dedent(
    """
    import socket, sys, time
    from flowno_io import HttpServer, Request, sleep
    from flowno_io.flowno import FlowHDL, node
    from flowno_io.testing import ServerThread

    log = []

    @node
    async def Slow(x: int) -> int:
        log.append("flow-start")
        await sleep(1.0)
        log.append("flow-end")
        return x

    def run_flow(request: Request) -> str:
        with FlowHDL() as f:
            f.slow = Slow(1)
        f.run_until_complete()          # nested: a new FlowEventLoop inside the serving loop's task
        return str(f.slow.get_data())

    def fast(request: Request) -> str:
        log.append("fast")
        return "fast"

    server = HttpServer("127.0.0.1", 0, routes={"/flow": run_flow, "/fast": fast})
    ServerThread(server).start()
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    slow.sendall(b"GET /flow HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
    deadline = time.monotonic() + 20
    while "flow-start" not in log and time.monotonic() < deadline:
        time.sleep(0.01)
    quick = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    quick.sendall(b"GET /fast HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
    try:
        answer = quick.recv(100)
    except OSError as exc:
        answer = type(exc).__name__.encode()
    print("fast:", answer[:15].decode(errors="replace"))
    print("flow:", slow.recv(1000).rsplit(b"\\r\\n", 1)[-1].decode())
    print("log:", ",".join(log))
    sys.stdout.flush()
    import os; os._exit(0)              # the server thread no longer stops: do not wait for it
    """
)


def test_a_flow_cannot_run_inside_a_handler(tmp_path: Path) -> None:
    """Canary of the upstream limit: when it fails, flowno can run a flow on the serving loop."""
    result = subprocess.run(
        [sys.executable, "-c", _FLOW_IN_HANDLER], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["flow"] == "(1,)"  # the flow itself completes...
    assert lines["log"] == "flow-start,flow-end"  # ...but /fast was never handled while it ran
    assert lines["fast"] != "HTTP/1.1 200 OK"  # (reset, or nothing)

"""A long fuzz run (``make fuzz``), bounded by a number of examples and a number of seconds.

Three phases, each given its share of both the examples and the seconds (a phase ends at the end
of the round of 100 examples in which it ran out, so the run may go a few seconds over):

1. **The server over sockets** (70%): the four properties of ``tests/test_fuzz_server.py``
   (arbitrary bytes, HTTP token soup, mutated requests and corpus files, valid requests cut
   anywhere), run in rounds of fresh random examples against one server.
2. **The client against hostile servers** (20%): ``HttpClient`` (plain, streamed body, SSE events)
   fetches from a raw server that answers arbitrary, token-soup or mutated responses. The only
   outcomes allowed: a response, or an ``HttpError`` (never another exception, never a hang).
3. **The sans-IO parsers** (10%): the request parser sees the same requests whole and one byte at a
   time; the response parser and the SSE decoder take any bytes under any chunking and either
   parse them or raise ``RemoteProtocolError``.

Usage::

    python fuzz/fuzz_long.py                      # 20,000 examples or 300 s, whichever comes first
    python fuzz/fuzz_long.py --examples 200000 --seconds 3600

A failure prints hypothesis' minimal failing example and exits 1; otherwise the counts per
property are printed and the exit status is 0.
"""

from __future__ import annotations

import argparse
import gzip
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowno import EventLoop, sleep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_fuzz_server as server_fuzz  # (found through the path set just above)

from flowno_io import (
    HttpClient,
    HttpError,
    RemoteProtocolError,
    SSEDecoder,
    Timeout,
    streaming_response_is_ok,
)
from flowno_io.protocol.http11_client import ResponseParser
from flowno_io.protocol.http11_server import RequestHead, RequestParser

#: Examples per hypothesis run; a property runs as many rounds as its budget allows.
ROUND = 100


@dataclass
class Budget:
    """Examples and seconds allowed for one phase."""

    examples: int
    deadline: float

    def spent(self, examples_run: int) -> bool:
        """True once ``examples_run`` reached the examples allowed, or the deadline passed."""
        return examples_run >= self.examples or time.monotonic() >= self.deadline


@dataclass
class Property:
    """A hypothesis property: ``body(**drawn)`` over ``strategies``, counting the examples it runs."""

    name: str
    strategies: dict[str, st.SearchStrategy[Any]]
    body: Callable[..., None]
    examples: int = 0

    def run_round(self, examples: int) -> None:
        """One hypothesis run of ``examples`` fresh random examples (no database, no deadline)."""

        def counted(**drawn: Any) -> None:
            self.examples += 1
            self.body(**drawn)

        test = given(**self.strategies)(counted)
        settings(
            max_examples=max(1, examples),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(test)()


def run_rounds(properties: list[Property], budget: Budget) -> None:
    """Run the properties in turn, ``ROUND`` examples at a time, until ``budget`` is spent."""

    def run_so_far() -> int:
        return sum(prop.examples for prop in properties)

    while not budget.spent(run_so_far()):
        for prop in properties:
            if budget.spent(run_so_far()):
                break
            share = (budget.examples - run_so_far()) // len(properties)  # each property gets a turn
            prop.run_round(max(1, min(ROUND, share)))


# -- phase 1: the server ---------------------------------------------------------------------------


def server_properties(target: server_fuzz.FuzzTarget) -> list[Property]:
    """The properties of tests/test_fuzz_server.py, bound to ``target``, with bigger inputs."""
    return [
        Property(
            "server: arbitrary bytes",
            {"data": st.binary(max_size=2000), "cuts": st.data()},
            lambda data, cuts: server_fuzz.check_arbitrary_bytes(target, data, cuts),
        ),
        Property(
            "server: HTTP token soup",
            {"data": server_fuzz.token_soup, "cuts": st.data()},
            lambda data, cuts: server_fuzz.check_arbitrary_bytes(target, data, cuts),
        ),
        Property(
            "server: mutated requests",
            {"seed": server_fuzz.seeds, "cuts": st.data()},
            lambda seed, cuts: server_fuzz.check_mutated_request(target, seed, cuts),
        ),
        Property(
            "server: valid requests cut anywhere",
            {"requests": server_fuzz.request_sequences(), "cuts": st.data()},
            lambda requests, cuts: server_fuzz.check_split_valid_requests(target, requests, cuts),
        ),
    ]


# -- phase 2: the client ---------------------------------------------------------------------------


class HostileServer:
    """A blocking TCP server (no flowno) answering every request with ``response``, then closing."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.response = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2.0)
                try:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        data = connection.recv(4096)
                        if not data:
                            break
                        request += data
                    connection.sendall(self.response)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


RESPONSE_TOKENS = [
    *[b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/2 ", b"200 OK", b"204 No Content", b"304 X", b"100 Continue"],
    *[b"301 Moved", b"500 Oops", b"\r\n", b"\n", b"\r\n\r\n", b"Content-Length: ", b"0", b"3", b"99"],
    *[b"Transfer-Encoding: chunked", b"Content-Type: text/event-stream", b"Content-Encoding: gzip"],
    *[b"Content-Type: application/json", b"Connection: close", b"Location: /x", b"data: ", b"id: "],
    *[b"event: ", b"retry: 5", b"\n\n", b"0\r\n\r\n", b"5\r\nhello\r\n", b"ffffffffffffffffff\r\n"],
    *[b'{"a": 1}', b"[DONE]", b":", b" ", b"\x00", b"\xff", gzip.compress(b"hello")[:12]],
]
VALID_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'e\r\ndata: {"a":1}\n\n\r\n17\r\nid: 2\nevent: x\ndata: y\n\n\r\n0\r\n\r\n',
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 25\r\n\r\n" + gzip.compress(b"hello"),
    b'HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n{"a":1}\n{"b":2}\n',
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
]
responses = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(RESPONSE_TOKENS), max_size=40).map(b"".join),
    st.sampled_from(VALID_RESPONSES).flatmap(server_fuzz.mutated),
)


class LoopThread:
    """A flowno loop in a background thread, running coroutines handed over from other threads.

    One loop for every client example: a loop per example would cost the clock task's linger
    (0.25 s) each time.
    """

    def __init__(self) -> None:
        self.loop = EventLoop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fuzz-client-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.loop.run_until_complete(self._keep_alive(), join=True)

    async def _keep_alive(self) -> None:
        while not self._stopping:
            await sleep(0.05)

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
        """Run ``coroutine`` on the loop and return its result (or raise its exception).

        Raises:
            AssertionError: it did not finish within ``timeout`` seconds (a hang).
        """
        done = threading.Event()
        outcome: dict[str, Any] = {}

        async def wrapper() -> None:
            try:
                outcome["value"] = await coroutine
            except BaseException as exc:  # handed to the calling thread
                outcome["error"] = exc
            finally:
                done.set()

        self.loop.create_task(wrapper())
        if not done.wait(timeout):
            raise AssertionError(f"the client hung for {timeout} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def close(self) -> None:
        """Stop the loop and wait for its thread."""
        self._stopping = True
        self._thread.join(5)


def client_properties(hostile: HostileServer, loop: LoopThread) -> list[Property]:
    """``HttpClient`` against ``hostile``: a response or an ``HttpError``, nothing else."""
    timeout = Timeout(connect=2.0, read=2.0, write=2.0, pool=2.0, total=5.0)
    client = HttpClient(timeout=timeout, max_body_bytes=1 << 20)

    async def fetch(mode: str) -> str:
        try:
            if mode == "get":
                await client.get(hostile.url)
                return "response"
            response = await client.stream_get(hostile.url)
            async with response:
                if streaming_response_is_ok(response):
                    items: Any = response.events() if mode == "events" else response.body
                    async for _ in items:
                        pass
            return "response"
        except HttpError as exc:
            return type(exc).__name__

    def hostile_response(data: bytes, mode: str) -> None:
        hostile.response = data
        loop.call(fetch(mode), timeout=10.0)

    strategies = {"data": responses, "mode": st.sampled_from(["get", "body", "events"])}
    return [Property("client: hostile responses", strategies, hostile_response)]


# -- phase 3: the sans-IO parsers --------------------------------------------------------------------


def parser_properties() -> list[Property]:
    """Request parser (whole = bytewise), response parser and SSE decoder (parse or raise)."""

    def heads(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], int | None]:
        parser = server_fuzz.request_parser()
        seen: list[tuple[str, bytes]] = []
        for chunk in chunks:
            try:
                parser.feed(chunk)
            except RemoteProtocolError as exc:
                return seen + _heads_of(parser), exc.status_hint
            seen += _heads_of(parser)
        return seen, None

    def request_parser(data: bytes) -> None:
        # The same requests, and an error in both or neither. (The status may differ: a long line
        # with a bad byte is 431 when it arrives in pieces, 400 when llhttp sees the byte first.)
        bytewise, whole = heads([data[i : i + 1] for i in range(len(data))]), heads([data])
        assert bytewise[0] == whole[0]
        assert (bytewise[1] is None) == (whole[1] is None), (bytewise[1], whole[1])

    def response_parser(data: bytes, cuts: st.DataObject, eof: bool) -> None:
        parser = ResponseParser(max_header_bytes=512)
        try:
            for piece in cuts.draw(server_fuzz.cut(data)):
                parser.feed(piece)
                parser.take_body()
            if eof:
                parser.feed_eof()
        except RemoteProtocolError:
            pass

    def sse_decoder(data: bytes, cuts: st.DataObject) -> None:
        decoder = SSEDecoder(max_event_bytes=256)
        try:
            for piece in cuts.draw(server_fuzz.cut(data)):
                decoder.feed(piece)
            decoder.close()
        except RemoteProtocolError:
            pass

    requests = st.one_of(
        st.binary(max_size=800), server_fuzz.token_soup, server_fuzz.seeds.flatmap(server_fuzz.mutated)
    )
    return [
        Property("parser: request same whole or bytewise", {"data": requests}, request_parser),
        Property(
            "parser: response parses or raises",
            {"data": responses, "cuts": st.data(), "eof": st.booleans()},
            response_parser,
        ),
        Property(
            "parser: SSE decodes or raises",
            {"data": st.one_of(st.binary(max_size=800), responses), "cuts": st.data()},
            sse_decoder,
        ),
    ]


def _heads_of(parser: RequestParser) -> list[tuple[str, bytes]]:
    found = []
    while (event := parser.next_event()) is not None:
        if isinstance(event, RequestHead):
            found.append((event.method, event.target))
    return found


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the three phases within ``--examples`` and ``--seconds``; print the counts."""
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--examples", type=int, default=20_000, help="examples in all (default 20000)")
    options.add_argument("--seconds", type=float, default=300.0, help="wall-clock limit (default 300)")
    args = options.parse_args(argv)

    def budget(share: float) -> Budget:
        """``share`` of the examples and of the seconds, from now (a round may run a little over)."""
        return Budget(max(1, round(args.examples * share)), time.monotonic() + args.seconds * share)

    started = time.monotonic()
    with server_fuzz.running_target() as target:
        server = server_properties(target)
        run_rounds(server, budget(0.7))
    hostile, loop = HostileServer(), LoopThread()
    try:
        client = client_properties(hostile, loop)
        run_rounds(client, budget(0.2))
    finally:
        loop.close()
        hostile.close()
    parsers = parser_properties()
    run_rounds(parsers, budget(0.1))
    properties = server + client + parsers
    for prop in properties:
        print(f"{prop.name:40} {prop.examples:8d} examples")
    total = sum(prop.examples for prop in properties)
    print(f"{'total':40} {total:8d} examples in {time.monotonic() - started:.0f} s, no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())

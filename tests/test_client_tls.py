"""https: certificate verification (on by default), keep-alive and streaming over TLS.

The server is the stdlib ``ThreadingHTTPServer`` behind ``ssl``, with a self-signed certificate
made for the test by the ``openssl`` command (skipped, with the reason, when it is missing).
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_servers import StdlibServer
from helpers import make_certificate

from flowno_io._errors import ConnectError
from flowno_io.client.client import HttpClient
from flowno_io.client.response_stream import streaming_response_is_ok
from flowno_io.testing import run

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    return {
        "local": make_certificate(directory, "local", "DNS:localhost,IP:127.0.0.1"),
        "other": make_certificate(directory, "other", "DNS:other.example"),
    }


class TlsServer(StdlibServer):
    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def tls_server(certificates: dict[str, tuple[Path, Path]]) -> Iterator[TlsServer]:
    server = TlsServer(*certificates["local"]).start()
    yield server
    server.stop()


def test_verification_is_on_by_default(tls_server: TlsServer) -> None:
    async def main() -> None:
        async with HttpClient() as client:
            await client.get(tls_server.url + "/echo")

    with pytest.raises(ConnectError, match="certificate verify failed"):
        run(main())


def test_trusted_certificate_and_keep_alive(tls_server: TlsServer, certificates: Any) -> None:
    cafile = str(certificates["local"][0])

    async def main() -> list[Any]:
        async with HttpClient(verify=cafile) as client:
            return [
                (await client.get(tls_server.url + f"/echo?i={i}")).decode_json()["path"] for i in range(5)
            ] + [(await client.post(tls_server.url + "/echo", json={"a": 1})).decode_json()["body"]]

    assert run(main()) == [f"/echo?i={i}" for i in range(5)] + ['{"a":1}']
    assert tls_server.connections == 1


def test_verification_can_be_turned_off(tls_server: TlsServer) -> None:
    async def main() -> int:
        async with HttpClient(verify=False) as client:
            return (await client.get(tls_server.url + "/gzip")).status_code

    assert run(main()) == 200


def test_context_argument_and_hostname_mismatch(certificates: Any) -> None:
    server = TlsServer(*certificates["other"]).start()
    try:
        context = ssl.create_default_context(cafile=str(certificates["other"][0]))

        async def main() -> None:
            async with HttpClient(verify=context) as client:
                await client.get(server.url + "/echo")

        with pytest.raises(ConnectError, match=r"match|mismatch"):
            run(main())
    finally:
        server.stop()


def test_stream_over_tls(tls_server: TlsServer, certificates: Any) -> None:
    @tls_server.route("/sse")
    def sse(handler: Any) -> None:
        handler.send_chunked(
            [b'data: {"n": 1}\n\n', b"data: two\n\n", b"data: [DONE]\n\n"], "text/event-stream"
        )

    async def main() -> list[Any]:
        async with HttpClient(verify=str(certificates["local"][0])) as client:
            response = await client.stream_get(tls_server.url + "/sse")
            assert streaming_response_is_ok(response)
            items = [item async for item in response.body]
            await client.get(tls_server.url + "/echo")
            return items

    assert run(main()) == [{"n": 1}, "two"]

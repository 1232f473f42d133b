"""Proxies (issue 16) through proxy.py (PyPI, code we did not write) on 127.0.0.1: http requests
forwarded, https requests tunnelled with CONNECT to a TLS server, proxy authentication, and
``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from the environment."""

from __future__ import annotations

import ipaddress
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import proxy
import pytest
from client_httpbin import HttpbinServer, httpbin_server  # noqa: F401  (fixture)
from test_client_tls import TlsServer, make_certificate

from flowno_io import HttpClient
from flowno_io._errors import ConnectError
from flowno_io.testing import run

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def auth_proxy() -> Iterator[str]:
    """proxy.py requiring ``user:secret``; yields its URL without credentials."""
    logging.getLogger("proxy").setLevel(logging.WARNING)
    with proxy.Proxy(
        hostname=ipaddress.ip_address("127.0.0.1"),
        port=0,
        num_workers=1,
        num_acceptors=1,
        basic_auth="user:secret",
    ) as running:
        yield f"127.0.0.1:{running.flags.port}"


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsServer, Path]]:
    cert, key = make_certificate(tmp_path_factory.mktemp("proxy-tls"), "local", "DNS:localhost,IP:127.0.0.1")
    server = TlsServer(cert, key).start()
    yield server, cert
    server.stop()


def test_http_forwarded_with_proxy_auth(auth_proxy: str, httpbin_server: HttpbinServer) -> None:  # noqa: F811
    async def main() -> list[Any]:
        async with HttpClient(proxy=f"http://user:secret@{auth_proxy}", trust_env=False) as client:
            ok = await client.get(httpbin_server.url + "/get", params={"via": "proxy"})
        async with HttpClient(proxy=f"http://{auth_proxy}", trust_env=False) as client:
            refused = await client.get(httpbin_server.url + "/get")
        return [ok.status_code, ok.decode_json(), refused.status_code]

    status, echoed, refused = run(main())
    assert status == 200 and echoed["args"] == {"via": "proxy"}
    assert "Proxy-Authorization" not in echoed["headers"]  # the proxy consumed it
    assert refused == 407  # proof the request went to the proxy


def test_https_tunnelled_with_connect(auth_proxy: str, tls_target: tuple[TlsServer, Path]) -> None:
    server, cert = tls_target

    async def main() -> list[Any]:
        async with HttpClient(
            proxy=f"http://user:secret@{auth_proxy}", verify=str(cert), trust_env=False
        ) as client:
            first = await client.get(server.url + "/echo")
            second = await client.post(server.url + "/echo", json={"n": 1})
            tunnels = client.pool.connections_opened
        return [first.decode_json(), second.decode_json(), tunnels]

    first, second, tunnels = run(main())
    assert first["method"] == "GET" and first["path"] == "/echo"
    assert "proxy-authorization" not in first["headers"]  # TLS end to end: only CONNECT carried it
    assert second["body"] == '{"n":1}' and tunnels == 1  # the tunnel is kept alive and reused


def test_tunnel_refused_is_connect_error(auth_proxy: str, tls_target: tuple[TlsServer, Path]) -> None:
    server, cert = tls_target

    async def main() -> None:
        async with HttpClient(
            proxy=f"http://user:wrong@{auth_proxy}", verify=str(cert), trust_env=False
        ) as client:
            await client.get(server.url + "/echo")

    with pytest.raises(ConnectError, match="407"):
        run(main())


def test_proxy_from_environment_and_no_proxy(
    auth_proxy: str,
    httpbin_server: HttpbinServer,  # noqa: F811
    tls_target: tuple[TlsServer, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, cert = tls_target
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{auth_proxy}")  # no credentials: the proxy says 407
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:secret@{auth_proxy}")

    async def main() -> list[int]:
        async with HttpClient(verify=str(cert)) as client:
            statuses = [
                (await client.get(httpbin_server.url + "/get")).status_code,
                (await client.get(server.url + "/echo")).status_code,
            ]
        async with HttpClient(verify=str(cert), trust_env=False) as client:
            statuses.append((await client.get(httpbin_server.url + "/get")).status_code)
        return statuses

    assert run(main()) == [407, 200, 200]  # env http proxy used; tunnel; trust_env=False direct
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")

    async def bypassed() -> int:
        async with HttpClient() as client:
            return (await client.get(httpbin_server.url + "/get")).status_code

    assert run(bypassed()) == 200

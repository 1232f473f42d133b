"""The client's cookie jar (issue 16) against httpbin (werkzeug): ``/cookies/set`` (a redirect
that sets cookies), ``/cookies`` (echoes what was sent), ``/cookies/delete``; opt-out; a shared jar."""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any

from client_httpbin import HttpbinServer, httpbin_server  # noqa: F401  (fixture)

from flowno_io import HttpClient
from flowno_io.testing import run


def test_cookies_set_by_a_redirect_are_sent_back(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    base = httpbin_server.url

    async def main() -> list[Any]:
        async with HttpClient(follow_redirects=True) as client:
            followed = await client.get(base + "/cookies/set", params={"a": "1", "b": "two words"})
            later = await client.get(base + "/cookies")
            deleted = await client.get(base + "/cookies/delete", params={"a": ""})
            names = sorted(cookie.name for cookie in client.cookies or [])
        return [followed.decode_json(), later.decode_json(), deleted.decode_json(), names]

    followed, later, deleted, names = run(main())
    assert followed == later == {"cookies": {"a": "1", "b": "two words"}}
    assert deleted == {"cookies": {"b": "two words"}} and names == ["b"]


def test_cookies_from_an_unfollowed_redirect_and_a_shared_jar(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    base = httpbin_server.url
    jar = CookieJar()

    async def main() -> list[Any]:
        async with HttpClient(cookies=jar) as client:
            redirect = await client.get(base + "/cookies/set/session/s1")
        async with HttpClient(cookies=jar) as client:
            shared = await client.get(base + "/cookies", headers={"X-Any": "1"})
            own_header = await client.get(base + "/cookies", headers={"Cookie": "mine=1"})
        return [redirect.status_code, shared.decode_json(), own_header.decode_json()]

    status, shared, own_header = run(main())
    assert status == 302 and shared == {"cookies": {"session": "s1"}}
    assert own_header == {"cookies": {"mine": "1"}}  # a request's own Cookie header wins


def test_cookies_opt_out(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    base = httpbin_server.url

    async def main() -> list[Any]:
        async with HttpClient(follow_redirects=True, cookies=False) as client:
            followed = await client.get(base + "/cookies/set", params={"a": "1"})
            return [followed.decode_json(), client.cookies]

    assert run(main()) == [{"cookies": {}}, None]

"""``files=`` multipart uploads (issue 16) against httpbin's ``/post`` (werkzeug parses the form):
in-memory parts, files streamed with a ``Content-Length``, async iterables sent chunked."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from client_httpbin import HttpbinServer, httpbin_server  # noqa: F401  (fixture)

from flowno_io import HttpClient
from flowno_io._errors import LocalProtocolError
from flowno_io.client.multipart import SizedBody, encode_multipart
from flowno_io.testing import run


def test_in_memory_files_and_form_fields(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    async def main() -> Any:
        async with HttpClient() as client:
            response = await client.post(
                httpbin_server.url + "/post",
                data={"title": "report", "tags": ["a", "b"]},
                files={
                    "notes": ("notes.txt", "plain text"),
                    "blob": ("x.bin", b"\x00\x01", "application/x-demo"),
                },
            )
            return response.decode_json()

    echoed = run(main())
    assert echoed["form"] == {"title": "report", "tags": ["a", "b"]}
    assert echoed["files"] == {"notes": "plain text", "blob": "\x00\x01"}
    assert echoed["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")


def test_file_streamed_with_content_length(httpbin_server: HttpbinServer, tmp_path: pathlib.Path) -> None:  # noqa: F811
    path = tmp_path / "upload.csv"
    content = b"id,name\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(20000))  # ~250 KiB
    path.write_bytes(content)

    async def main() -> Any:
        async with HttpClient() as client:
            with path.open("rb") as file:
                response = await client.post(httpbin_server.url + "/post", files={"upload": file})
            return response.decode_json()

    echoed = run(main())
    assert echoed["files"]["upload"] == content.decode()
    assert int(echoed["headers"]["Content-Length"]) > len(content)
    assert "Transfer-Encoding" not in echoed["headers"]


def test_async_iterable_part_is_sent_chunked(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"piece %d;" % i

    async def main() -> Any:
        async with HttpClient() as client:
            response = await client.post(
                httpbin_server.url + "/post", files={"stream": ("s.txt", pieces(), "text/plain")}
            )
            return response.decode_json()

    echoed = run(main())
    assert echoed["files"] == {"stream": "piece 0;piece 1;piece 2;piece 3;piece 4;"}
    assert echoed["headers"].get("Transfer-Encoding") == "chunked"


def test_sized_body_length_is_exact(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)

    async def collect(body: Any) -> bytes:
        return b"".join([chunk async for chunk in body])

    with path.open("rb") as file:
        body, _ = encode_multipart({"a": 1}, {"f": file}, boundary="BOUNDARY")
        assert isinstance(body, SizedBody)
        assert len(run(collect(body))) == body.length


def test_file_that_changes_size_is_local_protocol_error(
    httpbin_server: HttpbinServer,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "grows.txt"
    path.write_bytes(b"x" * 100)

    async def main() -> None:
        async with HttpClient() as client:
            with path.open("rb") as file:
                body, content_type = encode_multipart(None, {"f": file})
                path.write_bytes(b"x" * 200)  # grows after its size was taken
                await client.post(
                    httpbin_server.url + "/post", data=body, headers={"Content-Type": content_type}
                )

    with pytest.raises(LocalProtocolError):
        run(main())

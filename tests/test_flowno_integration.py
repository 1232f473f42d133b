"""flowno-io inside flowno dataflow programs (@node flows run on the stock EventLoop)."""

from __future__ import annotations

from flowno import FlowHDL, node, spawn

from flowno_io import HttpServer, Response, open_tcp_stream


@node
async def FetchOverRawStream(path: str) -> bytes:
    """A flow node that runs a server and talks to it with flowno-io's stream layer."""
    server = HttpServer("127.0.0.1", 0)
    server.add_route("/greet/{name}", lambda request: Response(f"hello {request.path_params['name']}"))
    server.bind()
    await spawn(server.serve())
    stream = await open_tcp_stream("127.0.0.1", server.port, connect_timeout=2)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := await stream.receive_some(timeout=2):
        data += chunk
    await stream.aclose()
    await server.close()
    return data


@node
async def Body(response: bytes) -> str:
    return response.partition(b"\r\n\r\n")[2].decode()


def test_server_and_stream_inside_a_node_flow() -> None:
    with FlowHDL() as f:
        f.fetch = FetchOverRawStream("/greet/flow")
        f.body = Body(f.fetch)
    f.run_until_complete()
    assert f.body.get_data() == ("hello flow",)

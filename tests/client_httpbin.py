"""httpbin (the PyPI package, code we did not write) served by werkzeug's threaded WSGI server on
127.0.0.1 port 0 in a background thread, for the HttpClient feature tests."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server


class _Http11Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpbin behind gunicorn


class HttpbinServer:
    """httpbin's Flask app on ``127.0.0.1:<port>`` (HTTP/1.1, keep-alive, one thread per connection)."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        import httpbin  # imported here: it logs a warning about flasgger at import

        app = httpbin.app

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            # httpbin accepts chunked request bodies only from a server naming itself gunicorn;
            # werkzeug de-chunks them just as well (and sets wsgi.input_terminated), so say so.
            if environ.get("wsgi.input_terminated"):
                environ["SERVER_SOFTWARE"] = "gunicorn/werkzeug"
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, wsgi, threaded=True, request_handler=_Http11Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpbinServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def httpbin_server() -> Iterator[HttpbinServer]:
    server = HttpbinServer().start()
    yield server
    server.stop()

"""What every benchmark app serves, so that all systems send the same bytes.

Imported by the apps in this folder (they run as scripts, with this folder on ``sys.path``) and by
the harness (``bench/run.py``), which builds the ``/echo`` request body from :data:`ECHO_BODY`.
"""

from __future__ import annotations

import json

#: The hello route's body (``text/plain``).
HELLO = "Hello, world!"

#: Events per SSE stream unless the request says ``?n=``.
DEFAULT_EVENTS = 1000

#: Seconds an idle keep-alive connection is kept by every bench server: long enough for the
#: "10,000 idle connections" scenario (the libraries' defaults are 5 s to 75 s).
KEEPALIVE_TIMEOUT = 600.0

#: Listen backlog of every bench server (aiohttp's default is 128, ours 1024, uvicorn's 2048).
BACKLOG = 1024


def event_data(index: int) -> str:
    """The ``data`` of the SSE event number ``index``: a small JSON text, like an LLM token chunk."""
    return f'{{"i":{index},"token":"hello"}}'


#: Size of the ``/echo`` request body in bytes.
ECHO_BODY_BYTES = 1024


def echo_document() -> dict[str, object]:
    """A JSON document whose compact encoding is exactly :data:`ECHO_BODY_BYTES` long."""
    items = [{"id": n, "name": f"item-{n}", "price": n * 1.25, "tags": ["a", "b"]} for n in range(17)]
    document: dict[str, object] = {"user": "bench", "items": items, "note": ""}
    document["note"] = "x" * (ECHO_BODY_BYTES - len(_compact(document)))
    return document


def _compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"))


#: The ``/echo`` request body: :func:`echo_document` as compact JSON.
ECHO_BODY = _compact(echo_document())

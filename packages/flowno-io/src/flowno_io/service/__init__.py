"""Building blocks for small services on :class:`~flowno_io.HttpServer` (used by ``services/``).

* :class:`RouteTable`: routes whose handlers get a structured JSON access log, JSON errors for
  bad input and handler crashes, and 404/405 answers in the same shape; ``describe()`` lists them.
* :func:`run_service` and friends: the command line every service shares (``--host --port
  --workers --log-level --access-log``, with environment-variable fallbacks), one or more worker
  processes, graceful SIGTERM.
"""

from ._routes import Handler, RouteTable, json_error
from ._runner import ServiceOptions, add_service_arguments, options_from, run_service

__all__ = [
    "Handler",
    "RouteTable",
    "ServiceOptions",
    "add_service_arguments",
    "json_error",
    "options_from",
    "run_service",
]

"""Raw-socket readers for tests: they live in :mod:`helpers`; this name stays for older imports."""

from __future__ import annotations

from helpers import read_response, read_responses, read_until_closed, status_of

__all__ = ["read_response", "read_responses", "read_until_closed", "status_of"]

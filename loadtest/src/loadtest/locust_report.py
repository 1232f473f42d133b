"""Read Locust's ``--csv`` output back: a summary table, and the failure count for checks.

The p50 column is Locust's ``50%`` percentile, not its ``Median Response Time``: Locust clamps
that median to the exact minimum, so when every response rounds down (Locust keeps whole
milliseconds below 100 ms) the "median" it writes is the fastest response. Both percentiles are
Locust's rounded values; min and max are exact.

Example:
    >>> rows = [
    ...     {"Type": "GET", "Name": "/echo", "Request Count": "10", "Failure Count": "0",
    ...      "Median Response Time": "1.37", "Min Response Time": "1.37", "50%": "1", "95%": "2",
    ...      "99%": "3", "Max Response Time": "3.5", "Requests/s": "5.0"},
    ... ]
    >>> print(locust_table(rows))
    type  name   requests  failures  min ms  p50 ms  p95 ms  p99 ms  max ms  req/s
    ----  -----  --------  --------  ------  ------  ------  ------  ------  -----
    GET   /echo        10         0    1.37       1       2       3     3.5      5
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from .report import format_table

__all__ = ["locust_table", "read_locust_stats", "total_failures"]

_COLUMNS = (
    ("Type", "type"),
    ("Name", "name"),
    ("Request Count", "requests"),
    ("Failure Count", "failures"),
    ("Min Response Time", "min ms"),
    ("50%", "p50 ms"),
    ("95%", "p95 ms"),
    ("99%", "p99 ms"),
    ("Max Response Time", "max ms"),
    ("Requests/s", "req/s"),
)


def read_locust_stats(path: str | Path) -> list[dict[str, str]]:
    """The rows of a Locust ``<prefix>_stats.csv`` (the last one is ``Aggregated``)."""
    with Path(path).open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _number(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return value


def _value(row: Mapping[str, str], key: str) -> str:
    if key == "50%" and not row.get(key):  # an older Locust without percentile columns
        return row.get("Median Response Time", "")
    return row.get(key, "")


def locust_table(rows: Sequence[Mapping[str, str]]) -> str:
    """Locust's per-request statistics as a plain-text table."""
    cells = [
        {
            key: _number(_value(row, key)) if key not in ("Type", "Name") else row.get(key, "")
            for key, _ in _COLUMNS
        }
        for row in rows
    ]
    return format_table(cells, [key for key, _ in _COLUMNS], [label for _, label in _COLUMNS])


def total_failures(rows: Sequence[Mapping[str, str]]) -> int:
    """Failures in the ``Aggregated`` row (0 if there is none)."""
    for row in rows:
        if row.get("Name") == "Aggregated":
            return int(row.get("Failure Count") or 0)
    return 0

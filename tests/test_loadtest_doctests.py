"""The examples in the loadtest package's docstrings (the root pytest config collects only the library's)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "loadtest.histogram",
    "loadtest.stats",
    "loadtest.schedule",
    "loadtest.scenario",
    "loadtest.report",
    "loadtest.html_report",
    "loadtest.locust_report",
    "loadtest.thresholds",
    "loadtest.testing",
    "loadtest.parallel",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0

"""Headers: the seed API, repeated fields, and injection rejection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowno_io import Headers


def test_seed_api() -> None:
    headers = Headers()
    headers.set("Content-Type", "application/json")
    headers.set("Accept-Encoding", ["gzip", "deflate"])
    assert headers.get("content-type") == "application/json"
    assert headers.get("ACCEPT-ENCODING") == "gzip, deflate"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert headers.stringify() == "content-type: application/json\r\naccept-encoding: gzip, deflate"
    headers.delete("CONTENT-TYPE")
    headers.delete("never-there")
    assert list(headers) == [("accept-encoding", "gzip, deflate")]
    other = Headers()
    other.set("Accept-Encoding", "br")
    other.set("X-New", "1")
    headers.merge(other)
    assert dict(headers) == {"accept-encoding": "br", "x-new": "1"}


def test_add_keeps_repeated_fields() -> None:
    headers = Headers()
    headers.add("Set-Cookie", "a=1")
    headers.add("set-cookie", "b=2")
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert len(headers) == 2
    assert "SET-COOKIE" in headers
    assert headers.stringify() == "set-cookie: a=1\r\nset-cookie: b=2"
    headers.set("Set-Cookie", "c=3")
    assert headers.get_all("set-cookie") == ["c=3"]


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "x\r\nInjected: yes"])
def test_values_with_cr_lf_nul_are_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        Headers().set("X-Test", value)
    with pytest.raises(ValueError):
        Headers().add("X-Test", value)


@pytest.mark.parametrize("name", ["", "Bad Name", "a:b", "x\r\ny", "caf\u00e9", "(x)"])
def test_names_that_are_not_tokens_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        Headers().set(name, "v")


@given(st.text(min_size=1), st.text())
def test_set_either_rejects_or_round_trips(name: str, value: str) -> None:
    headers = Headers()
    try:
        headers.set(name, value)
    except ValueError:
        return
    assert headers.get(name.upper()) == value
    # An accepted field serializes as exactly one line: no CR, LF or NUL can smuggle in another.
    assert "\n" not in value and "\r" not in value and "\x00" not in value
    assert headers.stringify() == f"{name.lower()}: {value}"

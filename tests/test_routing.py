"""Router: patterns, converters, 404/405 decisions."""

from __future__ import annotations

import pytest

from flowno_io.server.routing import MethodNotAllowed, NotFound, Router


def make_router() -> Router[str]:
    router: Router[str] = Router()
    router.add("/", "root", ["GET"])
    router.add("/items", "list", ["GET"])
    router.add("/items", "create", ["POST"])
    router.add("/items/{id:int}", "item", ["GET", "DELETE"])
    router.add("/items/{name}", "named")
    router.add("/static/{rest:path}", "static", ["GET"])
    return router


def test_static_and_dynamic_matches() -> None:
    router = make_router()
    assert router.match("GET", "/") == ("root", {})
    assert router.match("POST", "/items") == ("create", {})
    assert router.match("GET", "/items/12") == ("item", {"id": 12})
    assert router.match("PATCH", "/items/abc") == ("named", {"name": "abc"})
    assert router.match("GET", "/static/css/a.css") == ("static", {"rest": "css/a.css"})


def test_head_is_allowed_wherever_get_is() -> None:
    assert make_router().match("HEAD", "/items") == ("list", {})


def test_not_found_and_method_not_allowed() -> None:
    router = make_router()
    with pytest.raises(NotFound):
        router.match("GET", "/nope")
    with pytest.raises(NotFound):
        router.match("GET", "/items/1/extra")
    with pytest.raises(MethodNotAllowed) as info:
        router.match("PUT", "/items")
    assert info.value.allowed == ["GET", "HEAD", "POST"]


def test_one_segment_parameters_do_not_cross_slashes() -> None:
    router: Router[str] = Router()
    router.add("/a/{x}/b", "h")
    assert router.match("GET", "/a/1/b") == ("h", {"x": "1"})
    with pytest.raises(NotFound):
        router.match("GET", "/a/1/2/b")


def test_pattern_must_start_with_slash() -> None:
    with pytest.raises(ValueError):
        Router().add("nope", "h")

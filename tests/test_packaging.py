"""The flowno-io wheel: it builds with ``uv build``, says what a company needs to adopt it (license,
authors, classifiers, a long description), and installs and works in a clean virtual environment."""

from __future__ import annotations

import email.parser
import pathlib
import shutil
import subprocess
import sys
import zipfile
from email.message import Message

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "packages" / "flowno-io"
VERSION = "0.2.0"


def _uv() -> list[str]:
    uv = shutil.which("uv")
    if uv is not None:
        return [uv]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("uv is not installed (make install installs it)")
    return [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [*_uv(), "build", "--wheel", "--sdist", "--out-dir", str(out), str(PACKAGE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("flowno_io-*.whl")
    return path


def _metadata(wheel: pathlib.Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"flowno_io-{VERSION}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


def test_wheel_is_version_0_2_0_and_builds_with_uv(wheel: pathlib.Path) -> None:
    assert wheel.name == f"flowno_io-{VERSION}-py3-none-any.whl"
    assert list(wheel.parent.glob(f"flowno_io-{VERSION}.tar.gz")), "the sdist was not built"


def test_wheel_metadata_has_license_authors_classifiers_and_readme(wheel: pathlib.Path) -> None:
    meta = _metadata(wheel)
    assert meta["Name"] == "flowno-io"
    assert meta["Version"] == VERSION
    assert meta["License-Expression"] == "MIT"
    assert meta["Author"] or meta["Author-email"]
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Topic :: Internet :: WWW/HTTP") for c in classifiers)
    assert meta["Requires-Python"] == ">=3.11"
    requires = meta.get_all("Requires-Dist") or []
    assert {r.split("<")[0].split(">")[0] for r in requires} >= {"flowno", "httptools", "orjson"}
    # The README is the long description, and it is a real one (it shows code).
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert isinstance(description, str)
    assert "# flowno-io" in description and "```python" in description
    assert "HttpServer" in description and "flowno_io.run(server)" in description


def test_wheel_ships_the_license_and_py_typed(wheel: pathlib.Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        license_text = archive.read(f"flowno_io-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert "flowno_io/py.typed" in names
    assert license_text.startswith("MIT License")
    assert (ROOT / "LICENSE").read_text() == license_text, "packages/flowno-io/LICENSE differs from LICENSE"
    # Only the library: no tests, services or caches in the wheel.
    assert all(name.startswith(("flowno_io/", "flowno_io-")) for name in names), names
    assert not any("__pycache__" in name for name in names)


def test_changelog_has_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{VERSION}]" in changelog


def test_wheel_installs_and_works_in_a_clean_venv(wheel: pathlib.Path, tmp_path: pathlib.Path) -> None:
    venv = tmp_path / "venv"
    uv = _uv()
    subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [*uv, "pip", "install", "--quiet", "--python", str(python), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    # Run outside the repository, so nothing but the installed wheel can be imported.
    script = (
        "import importlib.metadata, pathlib, flowno_io, flowno_io.sse, flowno_io.service, flowno_io.flowno\n"
        "assert 'site-packages' in flowno_io.__file__, flowno_io.__file__\n"
        "assert (pathlib.Path(flowno_io.__file__).parent / 'py.typed').exists()\n"
        "from flowno_io import HttpServer\n"
        "server = HttpServer('127.0.0.1', 0)\n"
        "server.bind()\n"
        "assert server.port > 0\n"
        "print(importlib.metadata.version('flowno-io'))\n"
    )
    result = subprocess.run(
        [str(python), "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == VERSION


USER_SERVICE = '''
"""A user's service, outside the repository, checked with mypy --strict and no configuration."""
from collections.abc import AsyncIterator

from flowno_io import EventSourceResponse, HttpClient, HttpServer, Request, Response, ServerSentEvent
from flowno_io.flowno import EventLoop, FlowHDL, Stream, TaskHandle, node, sleep, spawn

server = HttpServer("127.0.0.1", 0)


@server.route("/users/{id:int}", methods=["GET"])
async def get_user(request: Request) -> Response:
    await sleep(0)
    return Response.json({"id": request.path_params["id"]})


@server.route("/ticks", methods=["GET"])
def ticks(request: Request) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        for n in range(3):
            yield ServerSentEvent({"n": n})
    return EventSourceResponse(events())


@node
async def Fetch(url: str) -> int:
    return (await HttpClient().get(url)).status_code


@node
async def Words(text: str) -> AsyncIterator[str]:
    for word in text.split():
        yield word


@node(stream_in=["words"])
async def Count(words: Stream[str]) -> int:
    return len([word async for word in words])


async def main() -> int:
    handle: TaskHandle[None] = await spawn(server.serve())
    response = await HttpClient().get(f"http://127.0.0.1:{server.port}/users/7")
    await server.close()
    await handle.join()
    return response.status_code


def flow() -> int | None:
    with FlowHDL() as f:
        f.words = Words("a b c")
        f.count = Count(f.words)
    f.run_until_complete()
    data = f.count.get_data()
    return None if data is None else int(data[0])


status: int = EventLoop().run_until_complete(main(), join=True)
'''


def _mypy_strict(tmp_path: pathlib.Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "service.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "service.py"],
        cwd=tmp_path,  # no pyproject.toml here: no ignore_missing_imports
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_strict_passes_on_a_user_service(tmp_path: pathlib.Path) -> None:
    result = _mypy_strict(tmp_path, USER_SERVICE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_catches_mistakes_in_a_user_service(tmp_path: pathlib.Path) -> None:
    """The facade's types are real: a wrong argument type is reported."""
    result = _mypy_strict(tmp_path, USER_SERVICE + "\nEventLoop().run_until_complete(main, join=True)\n")
    assert result.returncode == 1 and "run_until_complete" in result.stdout, result.stdout


def test_flowno_itself_is_still_untyped(tmp_path: pathlib.Path) -> None:
    """Canary: when flowno ships py.typed, ``flowno_io.flowno`` can become plain re-exports."""
    result = _mypy_strict(tmp_path, "from flowno import EventLoop\n\nEventLoop()\n")
    assert "import-untyped" in result.stdout, result.stdout

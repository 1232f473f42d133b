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

"""Every Python block of the README files and ``docs/*.md`` runs, as a user would copy it.

Each block runs as its own script in a fresh interpreter, in an empty directory. It must exit 0,
print something (every example shows its output: a block that prints nothing usually defines a
function it never calls), and leave no "never awaited" warning or traceback on stderr.

A marker on the line before a block's fence says what it needs:

* ``<!-- docs-run: services -->``: the echo and stream services; the test starts them on free
  ports and rewrites ``127.0.0.1:8080`` / ``127.0.0.1:8081`` in the block to their addresses.
* ``<!-- docs-run: serves PORT -->``: the block serves until stopped (``flowno_io.run``); the test
  replaces ``PORT`` by a free one, waits until ``GET /`` answers 200, sends SIGINT and expects exit 0.
* ``<!-- docs-run: skip REASON -->``: not run (the reason is required).

Files listed in :data:`FRAGMENTS` hold excerpts, not programs: their blocks are only compiled.
"""

from __future__ import annotations

import doctest
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from service_process import ServiceProcess, start_service, wait_exit

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    ROOT / "packages" / "flowno-io" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
#: Files whose Python blocks are excerpts of larger programs (compiled, not run), and why.
FRAGMENTS = {
    "docs/flowno-upstream.md": "reproducer excerpts; each runs in full in tests/test_flowno_limits.py",
}
BLOCK_TIMEOUT = 60.0
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*docs-run:\s*(\S+)\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int
    code: str
    marker: str | None
    argument: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of ``path`` with the marker on the line before each (if any)."""
    text = path.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        blocks.append(
            Block(
                path,
                line,
                match.group(1),
                marker.group(1) if marker else None,
                marker.group(2) if marker else "",
            )
        )
    return blocks


ALL_BLOCKS = [block for path in DOCS for block in python_blocks(path)]
RUNNABLE = [b for b in ALL_BLOCKS if str(b.path.relative_to(ROOT)) not in FRAGMENTS]


def test_the_readmes_have_runnable_examples() -> None:
    runnable = [b for b in RUNNABLE if b.marker != "skip"]
    assert len([b for b in runnable if b.path.name == "README.md"]) >= 6, "README examples went missing"
    for block in ALL_BLOCKS:
        assert block.marker in (None, "services", "serves", "skip"), (
            f"{block.id}: unknown marker {block.marker}"
        )
        if block.marker == "skip":
            assert block.argument, f"{block.id}: a skipped block must say why"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b not in RUNNABLE], ids=lambda b: b.id)
def test_fragments_compile(block: Block) -> None:
    compile(block.code, block.id, "exec")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The echo and stream services on free ports: ``{"8080": "127.0.0.1:P", "8081": ...}``."""
    started: list[ServiceProcess] = []
    try:
        for name in ("echo_service", "stream_service"):
            started.append(start_service(name, tmp_path_factory.mktemp(name)))
        yield {"8080": started[0].url.split("//")[1], "8081": started[1].url.split("//")[1]}
    finally:
        for service in started:
            service.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_output(block: Block, result: subprocess.CompletedProcess[str]) -> None:
    report = (
        f"{block.id} failed:\n--- code\n{block.code}--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )
    assert result.returncode == 0, report
    assert result.stdout.strip(), (
        f"{block.id} printed nothing (is a function defined and never run?)\n{report}"
    )
    assert "never awaited" not in result.stderr, report
    assert "Traceback" not in result.stderr, report


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "default"}


@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.marker is None], ids=lambda b: b.id)
def test_block_runs(block: Block, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", block.code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        env=_env(),
    )
    _check_output(block, result)


@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.marker == "services"], ids=lambda b: b.id)
def test_block_runs_against_the_services(block: Block, services: dict[str, str], tmp_path: Path) -> None:
    code = block.code
    for port, address in services.items():
        code = code.replace(f"127.0.0.1:{port}", address)
    assert code != block.code, f"{block.id} is marked services but names neither 127.0.0.1:8080 nor :8081"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        env=_env(),
    )
    _check_output(block, result)


@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.marker == "serves"], ids=lambda b: b.id)
def test_serving_block_serves_until_ctrl_c(block: Block, tmp_path: Path) -> None:
    port = _free_port()
    assert block.argument in block.code, f"{block.id}: port {block.argument} not in the block"
    code = block.code.replace(block.argument, str(port))
    with (tmp_path / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, env=_env()
        )
        try:
            deadline = time.monotonic() + BLOCK_TIMEOUT
            body = None
            while body is None and time.monotonic() < deadline and process.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        assert response.status == 200
                        body = response.read()
                except OSError:
                    time.sleep(0.05)  # not listening yet: poll again until the deadline
            assert body, f"{block.id} did not answer GET / on port {port}: exit {process.poll()}"
            process.send_signal(signal.SIGINT)
            assert wait_exit(process, BLOCK_TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        stderr.seek(0)
        assert "Traceback" not in stderr.read()


# -- docstring examples ------------------------------------------------------------------------

#: Public examples that still rely on their module's globals (pytest's doctests run with them, a
#: user's copy does not): each needs its import line. Strict: remove a name once it is fixed.
DOCSTRING_GAPS: set[str] = set()  # every public example imports what it uses


def _public_docstrings() -> dict[str, object]:
    import flowno_io
    import flowno_io.flowno
    import flowno_io.service
    import flowno_io.sse
    import flowno_io.testing

    found: dict[str, object] = {}
    for module in (flowno_io, flowno_io.sse, flowno_io.service, flowno_io.testing, flowno_io.flowno):
        found[module.__name__] = module
        for name in module.__all__:
            obj = getattr(module, name)
            owner = getattr(obj, "__module__", "") or ""
            if owner.startswith("flowno_io") and (inspect.isclass(obj) or inspect.isfunction(obj)):
                found[f"{owner}.{obj.__qualname__}"] = obj
    return {
        name: obj
        for name, obj in found.items()
        if ">>>" in (obj.__doc__ or "")  # type: ignore[attr-defined]
    }


PUBLIC_DOCSTRINGS = _public_docstrings()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="needs its import line"))
        if name in DOCSTRING_GAPS
        else name
        for name in sorted(PUBLIC_DOCSTRINGS)
    ],
)
def test_public_docstring_examples_run_as_written(name: str) -> None:
    """Each public example runs with nothing but what it imports itself (as a user copies it)."""
    failures = []
    for test in doctest.DocTestFinder(recurse=False).find(PUBLIC_DOCSTRINGS[name], name, globs={}):
        test.globs = {"__name__": "__main__"}
        output: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        if runner.run(test, out=output.append).failed:
            failures.append("".join(output))
    assert not failures, "\n".join(failures)


def test_docstring_gaps_are_public_names() -> None:
    assert set(PUBLIC_DOCSTRINGS) >= DOCSTRING_GAPS


# -- links -------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")
#: The README section the lead is rewriting (its ``../shared/STYLE.md`` link points outside a clone).
LAYOUT_SECTION = "## Layout of the library"


def _sections(text: str) -> Iterator[tuple[str, str]]:
    for part in re.split(r"^(?=## )", text, flags=re.MULTILINE):
        yield part.split("\n", 1)[0], part


#: A file path in backticks (`bench/README.md`, `../shared/STYLE.md`): it must exist too.
_CODE_PATH = re.compile(r"`(\.{0,2}/?[\w.-]+(?:/[\w.-]+)+\.(?:md|py|toml|sh|json|svg))`")


LIBRARY = ROOT / "packages/flowno-io/src/flowno_io"


def _broken_links(path: Path, text: str) -> list[str]:
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).resolve().is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    for target in _CODE_PATH.findall(text):
        # relative to the document, the repository, or the library's source (``io/clock.py``)
        candidates = [(base / target).resolve() for base in (path.parent, ROOT, LIBRARY, LIBRARY.parent)]
        if not any(c.is_relative_to(ROOT) and c.exists() for c in candidates):
            broken.append(f"`{target}`")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_in_a_clone(path: Path) -> None:
    text = "".join(part for title, part in _sections(path.read_text()) if title != LAYOUT_SECTION)
    assert not _broken_links(path, text)


def test_readme_layout_section_links_resolve() -> None:
    sections = dict(_sections((ROOT / "README.md").read_text()))
    assert not _broken_links(ROOT / "README.md", sections.get(LAYOUT_SECTION, ""))


def test_readme_links_the_guides() -> None:
    text = (ROOT / "README.md").read_text()
    for target in ("loadtest/README.md", "docs/flows.md", "CHANGELOG.md", "LICENSE", "docs/SECURITY.md"):
        assert f"]({target})" in text, target

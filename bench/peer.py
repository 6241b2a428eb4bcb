"""The peer the bench compares with (`BENCH_PEER=litellm`): LiteLLM's proxy, pinned.

LiteLLM is the most used Python LLM proxy. The bench installs the version pinned in
`bench/peer-requirements.txt` into its own virtualenv, `bench/.peer-venv` (git-ignored; rebuilt
when the pin changes), so it never touches the project's `.venv`. It runs as the `litellm` CLI
runs it by default: one process, uvicorn with one worker, no database; configured with the one
model the bench uses (`bench-model`, OpenAI-compatible, `api_base` the fake upstream, `api_key`
the run's fake key, so a wrong or missing key gets the upstream's 401 and counts as an error),
and a master key that every caller must present, as aicreds authenticates its callers.

Its network calls at start are turned off, since this machine has no internet (and a benchmark
must not wait on one): the model cost map is read from the package
(`LITELLM_LOCAL_MODEL_COST_MAP`), telemetry is off (`LITELLM_TELEMETRY`, `telemetry: false`).
Its log (uvicorn's access log and LiteLLM's own, at their defaults) goes to the results folder;
`problems()` lists its lines that report an error, for results.json.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.fake_upstream import free_port
from bench.stack import BENCH_MODEL, StackError, stop_processes

BENCH_DIR = Path(__file__).resolve().parent
PEER_REQUIREMENTS = BENCH_DIR / "peer-requirements.txt"
PEER_VENV = BENCH_DIR / ".peer-venv"
PEER_NAME = "litellm"
_STAMP = ".bench-requirements"
# Settings of ours that must not leak into the peer's environment (a database, a proxy config).
_DROPPED_PREFIXES = ("LITELLM_", "DATABASE_URL", "REDIS_", "STORE_MODEL_IN_DB", "BENCH_")
_PROBLEM_MARKERS = ("ERROR", "Traceback", "Exception", "ConnectError")


def pinned_requirements(path: Path = PEER_REQUIREMENTS) -> str:
    """The pinned requirement lines (comments and blanks dropped)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return "\n".join(line for line in lines if line) + "\n"


def ensure_peer_venv(venv: Path = PEER_VENV, requirements: Path = PEER_REQUIREMENTS) -> Path:
    """The peer's `litellm` executable, creating or rebuilding its virtualenv when needed."""
    wanted = pinned_requirements(requirements)
    stamp = venv / _STAMP
    executable = venv / "bin" / "litellm"
    if executable.exists() and stamp.exists() and stamp.read_text() == wanted:
        return executable
    print(f"bench: installing the peer ({wanted.strip()}) into {venv}", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        check=True,
    )
    if not executable.exists():
        raise StackError(f"{executable} is missing after installing {requirements.name}")
    stamp.write_text(wanted)
    return executable


def peer_config(upstream_base_url: str) -> str:
    """LiteLLM's config.yaml: the bench model, its upstream and the master key.

    The keys are named by environment variable (`os.environ/...`), so the file holds none.
    """
    return "\n".join(
        [
            "model_list:",
            f"  - model_name: {BENCH_MODEL}",
            "    litellm_params:",
            f"      model: openai/{BENCH_MODEL}",
            f"      api_base: {upstream_base_url}/v1",
            "      api_key: os.environ/BENCH_PEER_UPSTREAM_KEY",
            "general_settings:",
            "  master_key: os.environ/BENCH_PEER_MASTER_KEY",
            "litellm_settings:",
            "  telemetry: false",
            "",
        ]
    )


def peer_environment(base: Mapping[str, str], upstream_key: str, master_key: str) -> dict[str, str]:
    """The peer's environment: `base` without our and its own stray settings, plus its keys."""
    env = {k: v for k, v in base.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "BENCH_PEER_UPSTREAM_KEY": upstream_key,
            "BENCH_PEER_MASTER_KEY": master_key,
        }
    )
    return env


@dataclass
class Peer:
    """The running LiteLLM proxy."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    master_key: str = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise StackError(f"{PEER_NAME} exited during the bench (exit {self.proc.returncode})")

    def stop(self) -> None:
        stop_processes([self.proc])

    def problems(self, limit: int = 20) -> dict[str, object]:
        """How many of its log lines report an error, and the first few (keys cannot be in
        them: the master key is refused nowhere, and the upstream key is never logged)."""
        return log_problems(self.log_path.read_text(errors="replace"), limit)


def log_problems(text: str, limit: int = 20) -> dict[str, object]:
    """Lines of a log that report an error or exception: their count and the first `limit`."""
    lines = [line.strip() for line in text.splitlines()]
    found = [line for line in lines if any(marker in line for marker in _PROBLEM_MARKERS)]
    return {"count": len(found), "first": [line[:300] for line in found[:limit]]}


def start_peer(
    work_dir: Path, log_dir: Path, upstream_base_url: str, upstream_key: str, timeout: float = 180
) -> Peer:
    """Install if needed, then start LiteLLM on a free port; ready when it answers its
    liveliness probe."""
    import httpx

    executable = ensure_peer_venv()
    peer_dir = work_dir / PEER_NAME
    peer_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = peer_dir / "config.yaml"
    config.write_text(peer_config(upstream_base_url))
    master_key = "sk-bench-master-" + secrets.token_urlsafe(24)
    port = free_port()
    log_path = log_dir / f"{PEER_NAME}.log"
    env = peer_environment(os.environ, upstream_key, master_key)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(executable),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            cwd=peer_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    peer = Peer(port=port, proc=proc, log_path=log_path, master_key=master_key)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{PEER_NAME} exited with {proc.returncode} while starting")
        try:
            if httpx.get(f"{peer.base_url}/health/liveliness", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    else:
        peer.stop()
        raise StackError(f"{PEER_NAME} was not live on port {port} within {timeout:.0f} s")
    try:
        first_call(peer)
    except BaseException:
        peer.stop()
        raise
    return peer


def first_call(peer: Peer, timeout: float = 60.0) -> None:
    """One chat completion with a long timeout: its first call loads a good deal of code (over
    a second here), longer than the bench's own first-call probe waits."""
    import httpx

    try:
        response = httpx.post(
            f"{peer.base_url}/v1/chat/completions",
            json={"model": BENCH_MODEL, "messages": [{"role": "user", "content": "warm up"}]},
            headers={"Authorization": f"Bearer {peer.master_key}"},
            timeout=timeout,
        )
    except httpx.HTTPError as err:
        raise StackError(f"{PEER_NAME}'s first call failed: {type(err).__name__}") from None
    if response.status_code != 200:
        raise StackError(f"{PEER_NAME}'s first call answered HTTP {response.status_code}")

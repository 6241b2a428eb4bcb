"""`make container-test`: build the image and run vault, router and gateway from it.

    .venv/bin/python -m tests.deploy.container_smoke

Not part of `make test` (it builds an image: minutes, root or a Docker engine). It runs each
service from the image with what deploy/docker-compose.yml gives it — its environment (only the
addresses rewritten to 127.0.0.1 and free ports), its secrets (from make_secrets.py, owned by
uid 10001, mode 0600), its user, read-only root, dropped capabilities, no-new-privileges, /tmp
as tmpfs and the vault's named volume — on the host network (no container bridge network),
then checks what an operator would: health checks, `aicreds-admin create-token` in the vault
container, the seed's curl examples, a model call reaching a local fake upstream with the
substituted key, the vault's files, SIGTERM within the stop timeout, and that data and token
survive `stop` and `start`. Everything it creates is removed at the end, also on failure.
Prints one line per check and "N passed, N failed"; exits 1 on any failure, 0 with a message
when no container engine can run here.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tests.deploy.compose_env import (
    SECRETS_MOUNT,
    SERVICES,
    STATE_MOUNT,
    healthcheck,
    host_ports,
    on_host,
    secret_files,
    service_secrets,
    stop_grace_period,
)
from tests.deploy.manifests import DEPLOY, ROOT, load_yaml_documents

IMAGE = os.environ.get("IMAGE", "aicreds:0.1.0")
SERVICE_UID = 10001
SKIPPED = 3  # build-image.sh: no engine


class CheckFailed(Exception):
    pass


@dataclass
class Report:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def check(self, name: str, step: Callable[[], str | None]) -> bool:
        started = time.monotonic()
        try:
            detail = step()
        except Exception as err:  # a check reports, the run goes on to clean up
            self.failed.append(name)
            print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
            return False
        self.passed.append(name)
        took = time.monotonic() - started
        print(f"ok   {name} ({took:.1f} s){': ' + detail if detail else ''}", flush=True)
        return True


def _engine() -> tuple[str, dict[str, str]]:
    """The engine deploy/container/engine.sh picks, and the environment to run it with."""
    script = (
        'source deploy/container/engine.sh && printf "%s\\n%s" "$ENGINE" "${CONTAINERS_CONF:-}"'
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    engine, _, conf = out.partition("\n")
    env = dict(os.environ)
    if conf:
        env["CONTAINERS_CONF"] = conf
    return engine, env


@dataclass
class Engine:
    command: str
    env: dict[str, str]
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            [self.command, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CheckFailed(f"{self.command} {args[0]}: {result.stderr.strip()[-1500:]}")
        return result.stdout

    def exec(
        self, container: str, *command: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.command, "exec", container, *command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def remove_all(self) -> None:
        for kind, name in reversed(self.created):
            if kind == "container":
                self.run("rm", "--force", "--time", "0", name, check=False, timeout=60)
            else:
                self.run("volume", "rm", "--force", name, check=False, timeout=60)
        self.created.clear()


def _compose_service(name: str) -> dict[str, Any]:
    compose = load_yaml_documents(DEPLOY / "docker-compose.yml")[0]
    service: dict[str, Any] = compose["services"][name]
    return service


def run_flags(service: str, secrets_dir: Path, volume: str, ports: dict[str, int]) -> list[str]:
    """`run` options for `service` from its compose definition (host network, loopback)."""
    spec = _compose_service(service)
    flags = ["--network", "host", "--user", spec["user"]]
    if spec.get("read_only"):
        flags.append("--read-only")
    for cap in spec.get("cap_drop", []):
        flags += ["--cap-drop", cap]
    for option in spec.get("security_opt", []):
        flags += ["--security-opt", option.replace(":true", "")]
    for path in spec.get("tmpfs", []):
        flags += ["--tmpfs", path]
    flags += ["--stop-timeout", str(int(stop_grace_period(service)))]
    files = secret_files()
    for name in service_secrets(service):
        flags += ["-v", f"{secrets_dir / files[name]}:{SECRETS_MOUNT}{name}:ro"]
    for mount in spec.get("volumes", []):
        source, _, target = mount.partition(":")
        assert target == STATE_MOUNT, mount
        flags += ["-v", f"{volume}:{target}"]
    env = on_host(service, ports)
    if service == "router":
        # The one deliberate difference: the router may reach the fake upstream on loopback.
        env["ROUTER_EGRESS_ALLOW"] = "127.0.0.1"
    for key, value in env.items():
        flags += ["-e", f"{key}={value}"]
    return flags


def health_command(service: str, ports: dict[str, int]) -> list[str]:
    """compose's healthcheck command with the address moved to this run's port."""
    command = healthcheck(service)
    target = command[3]
    if target.startswith("http"):
        command[3] = f"http://127.0.0.1:{ports[service]}/readyz"
    else:
        command[3] = f"127.0.0.1:{ports[service]}"
    return command


@dataclass
class Smoke:
    engine: Engine
    tmp: Path
    prefix: str = field(default_factory=lambda: f"aicreds-smoke-{secrets.token_hex(4)}")
    ports: dict[str, int] = field(default_factory=host_ports)
    token: str = ""

    def name(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    @property
    def volume(self) -> str:
        return f"{self.prefix}-vault-data"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def make_secrets(self) -> str:
        out = self.tmp / "secrets"
        subprocess.run(
            [sys.executable, str(DEPLOY / "make_secrets.py"), str(out)],
            check=True,
            capture_output=True,
        )
        # compose bind-mounts the files into containers running as uid 10001 (its header says
        # to chown them); the services refuse files others may read.
        owner = f"{SERVICE_UID}:{SERVICE_UID}"
        if os.geteuid() == 0:
            for path in [out, *out.iterdir()]:
                os.chown(path, SERVICE_UID, SERVICE_UID)
        elif self.engine.command == "podman":  # rootless: uid 10001 of the user namespace
            self.engine.run("unshare", "chown", "-R", owner, str(out))
        else:
            raise CheckFailed(f"chown {owner} needs root (sudo make container-test)")
        return f"{len(list(out.iterdir()))} files in {out}"

    def start(self) -> str:
        self.engine.run("volume", "create", self.volume)
        self.engine.created.append(("volume", self.volume))
        for service in SERVICES:
            flags = run_flags(service, self.tmp / "secrets", self.volume, self.ports)
            spec = _compose_service(service)
            self.engine.created.append(("container", self.name(service)))
            self.engine.run(
                "run", "--detach", "--name", self.name(service), *flags, IMAGE, *spec["command"]
            )
            self.wait_healthy(service)
        return ", ".join(f"{s} on 127.0.0.1:{p}" for s, p in self.ports.items())

    def wait_healthy(self, service: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        command = health_command(service, self.ports)
        while True:
            result = self.engine.exec(self.name(service), *command)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = self.engine.run("logs", self.name(service), check=False)
                raise CheckFailed(f"{service} unhealthy: {result.stderr.strip()}\n{logs[-3000:]}")
            time.sleep(1)

    def healthchecks(self) -> str:
        for service in SERVICES:
            result = self.engine.exec(self.name(service), *health_command(service, self.ports))
            if result.returncode != 0:
                raise CheckFailed(f"{service}: {result.stderr.strip()}")
        return "the compose healthcheck commands, TLS for vault and router"

    def create_token(self) -> str:
        result = self.engine.exec(
            self.name("vault"), "aicreds-admin", "create-token", "--user", "alice"
        )
        if result.returncode != 0:
            raise CheckFailed(result.stderr.strip()[-1500:])
        self.token = result.stdout.strip()
        if not self.token.startswith("sk-aic-"):
            raise CheckFailed(f"unexpected output {result.stdout!r}")
        return "token sk-aic-…"

    def seed_curl(self) -> str:
        from tests.deploy.test_make_run import curl

        creds = f"{self.gateway}/api/v2/users/me/ai-credentials"
        all_three = {
            "openai_api_key": "sk-...",
            "anthropic_api_key": "sk-ant-...",
            "custom_api_key": "custom-value",
        }
        body = json.dumps({"credentials": all_three}, indent=2)
        expect = [
            (curl("PUT", creds, self.token, body), (200, {"response": {"credentials": all_three}})),
            (curl("GET", creds, self.token), (200, {"response": {"credentials": all_three}})),
            (
                curl("PUT", f"{creds}/openai_api_key", self.token, '{"value": "sk-your-key"}'),
                (200, {"response": {"key": "openai_api_key", "value": "sk-your-key"}}),
            ),
            (
                curl("DELETE", f"{creds}/custom_api_key", self.token),
                (200, {"response": {"key": "custom_api_key"}}),
            ),
        ]
        for got, want in expect:
            if got != want:
                raise CheckFailed(f"got {got}, expected {want}")
        return "PUT all, GET, PUT one, DELETE one"

    def model_call(self) -> str:
        from devtools.demo import RecordingUpstream, run_flow

        with RecordingUpstream() as upstream, redirect_stdout(io.StringIO()) as shown:
            failures = run_flow(self.gateway, self.token, upstream)
        if failures:
            print(shown.getvalue())
            raise CheckFailed("; ".join(failures))
        return "the upstream got the substituted key, never the API token"

    def vault_files(self) -> str:
        script = (
            "import os, stat\n"
            f"for n in sorted(os.listdir('{STATE_MOUNT}')):\n"
            f"    s = os.stat(os.path.join('{STATE_MOUNT}', n))\n"
            "    print(n, s.st_uid, s.st_gid, oct(stat.S_IMODE(s.st_mode)))\n"
        )
        result = self.engine.exec(self.name("vault"), "python", "-c", script)
        if result.returncode != 0:
            raise CheckFailed(result.stderr)
        rows = [line.split() for line in result.stdout.splitlines()]
        if not rows:
            raise CheckFailed("the volume is empty")
        wrong = [r for r in rows if r[1:3] != [str(SERVICE_UID)] * 2 or r[3] != "0o600"]
        if wrong:
            raise CheckFailed(f"not owned by {SERVICE_UID} with mode 0600: {wrong}")
        return ", ".join(r[0] for r in rows)

    def no_root_process(self) -> str:
        script = (
            "import os\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        lines = open(f'/proc/{pid}/status').read().splitlines()\n"
            "    except OSError:\n"
            "        continue\n"
            "    uid = next(l for l in lines if l.startswith('Uid:')).split()[1:]\n"
            "    name = lines[0].split()[1]\n"
            "    print(pid, name, *uid)\n"
        )
        seen = []
        for service in SERVICES:
            result = self.engine.exec(self.name(service), "python", "-c", script)
            rows = [line.split() for line in result.stdout.splitlines()]
            root = [r for r in rows if "0" in r[2:]]
            if result.returncode != 0 or root:
                raise CheckFailed(f"{service}: {root or result.stderr}")
            seen += [f"{service}:{r[1]}" for r in rows]
        user = self.engine.run("image", "inspect", "--format", "{{.Config.User}}", IMAGE).strip()
        if user.split(":")[0] in {"", "0", "root"}:
            raise CheckFailed(f"image USER is {user!r}")
        return f"USER {user}; processes {', '.join(seen)}"

    def no_build_tools(self) -> str:
        script = (
            "import importlib.util, shutil\n"
            "tools = [t for t in ('gcc', 'cc', 'g++', 'make', 'ld', 'pip', 'pip3')"
            " if shutil.which(t)]\n"
            "mods = [m for m in ('pytest', 'mypy', 'ruff', 'pip', 'setuptools', 'grpc_tools',"
            " 'playwright') if importlib.util.find_spec(m)]\n"
            "print(tools, mods)\n"
            "raise SystemExit(1 if tools or mods else 0)\n"
        )
        result = self.engine.exec(self.name("gateway"), "python", "-c", script)
        if result.returncode != 0:
            raise CheckFailed(f"found {result.stdout.strip()} {result.stderr.strip()}")
        return "no compiler, pip, setuptools or test/dev package"

    def stop_and_start(self) -> str:
        from tests.deploy.test_make_run import curl

        creds = f"{self.gateway}/api/v2/users/me/ai-credentials"
        before = curl("GET", creds, self.token)
        took = {}
        for service in reversed(SERVICES):
            limit = stop_grace_period(service)
            started = time.monotonic()
            self.engine.run("stop", "--time", str(int(limit)), self.name(service), timeout=60)
            took[service] = time.monotonic() - started
            state = self.engine.run(
                "inspect", "--format", "{{.State.ExitCode}}", self.name(service)
            ).strip()
            # 0: the service stopped itself on SIGTERM; 137 would be the SIGKILL at the limit.
            if state != "0" or took[service] >= limit:
                raise CheckFailed(f"{service}: exit {state} after {took[service]:.1f} s")
        for service in SERVICES:
            self.engine.run("start", self.name(service))
            self.wait_healthy(service)
        after = curl("GET", creds, self.token)
        if after != before or before[0] != 200 or not before[1]["response"]["credentials"]:
            raise CheckFailed(f"before stop {before}, after start {after}")
        stops = ", ".join(f"{s} {t:.1f} s" for s, t in took.items())
        return (
            f"SIGTERM stop (limit {stop_grace_period('vault'):.0f} s): {stops}; data and token kept"
        )


def build_image(report: Report) -> int:
    started = time.monotonic()
    result = subprocess.run(
        ["deploy/container/build-image.sh"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode == SKIPPED:
        print(f"container test skipped: {result.stderr.strip()}")
        return SKIPPED
    if result.returncode != 0:
        report.failed.append("build image")
        print(f"FAIL build image:\n{result.stdout}{result.stderr[-4000:]}")
        return 1
    report.passed.append("build image")
    print(f"ok   build image ({time.monotonic() - started:.0f} s): {result.stdout.strip()}")
    return 0


@contextmanager
def _terminated_cleanly() -> Iterator[None]:
    """SIGTERM (CI cancelling) unwinds like Ctrl-C, so the finally blocks remove everything."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    report = Report()
    engine_name, env = _engine()
    if not engine_name:
        print("container test skipped: neither a Docker engine nor podman can run here")
        return 0
    if build_image(report) == SKIPPED:
        return 0
    if report.failed:
        print(f"{len(report.passed)} passed, {len(report.failed)} failed")
        return 1
    engine = Engine(engine_name, env)
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", IMAGE).strip())
    print(f"     image {IMAGE}: {size / 1e6:.0f} MB ({engine_name})")
    with _terminated_cleanly(), tempfile.TemporaryDirectory(prefix="aicreds-smoke-") as tmp:
        smoke = Smoke(engine, Path(tmp))
        try:
            if report.check("make_secrets.py (uid 10001, mode 0600)", smoke.make_secrets) and (
                report.check("run vault, router, gateway (host network, loopback)", smoke.start)
            ):
                report.check("healthchecks", smoke.healthchecks)
                if report.check(
                    "aicreds-admin create-token in the vault container", smoke.create_token
                ):
                    report.check("seed curl examples", smoke.seed_curl)
                    report.check("model call to a local fake upstream", smoke.model_call)
                    report.check("vault files: uid 10001, mode 0600", smoke.vault_files)
                    report.check("no process as root", smoke.no_root_process)
                    report.check("no build or test tools in the image", smoke.no_build_tools)
                    report.check("stop and start keep data and token", smoke.stop_and_start)
        finally:
            engine.remove_all()
            left = engine.run("ps", "--all", "--filter", f"name={smoke.prefix}", "--quiet")
            if left.strip():
                report.failed.append("cleanup")
                print(f"FAIL cleanup: containers left: {left.split()}")
    print(f"{len(report.passed)} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

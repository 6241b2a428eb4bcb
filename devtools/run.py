"""`make run`: vault, router and gateway on localhost, in the foreground (SPEC 6).

On first run in `STATE_DIR` (default `.state`) it creates the caller tokens and the two callers
files (mode 0600); the vault generates its development master keyring itself
(`VAULT_GENERATE_DEV_KEY=true`, with a loud warning). The listen addresses come from
`VAULT_LISTEN`, `ROUTER_LISTEN`, `GATEWAY_LISTEN` (port 0 picks a free port) and are wired into
each other; every other variable passes through. Once all three are ready it prints
`API token: sk-aic-...` for the user `demo` and a curl example.

The API token is made once per state directory with `aicreds-admin` and kept in
`STATE_DIR/demo-api.token`, so the token you exported stays valid across restarts; a new one is
made only if that one no longer works (revoked, expired, or the database was reset).

Ctrl-C or SIGTERM stops the services in reverse order (SIGTERM, then SIGKILL after a grace);
if one dies, the others are stopped and the exit status is 1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from services.common.callers import new_caller_token, write_callers_file, write_private_file
from services.healthcheck import grpc_serving, http_healthy

SERVICES = ("vault", "router", "gateway")
DEFAULT_LISTEN = {
    "vault": "127.0.0.1:50051",
    "router": "127.0.0.1:50052",
    "gateway": "127.0.0.1:8080",
}
READY_TIMEOUT = 30.0
STOP_GRACE = 15.0
API_TOKEN_FILE = "demo-api.token"


@dataclass(frozen=True)
class Grant:
    """A caller token (a file the client reads) and the right it holds at a server."""

    token_env: str | None  # the client's setting naming the token file, if any
    token_file: str  # default file name in STATE_DIR
    server: str
    caller: str
    right: str


GRANTS = (
    Grant("GATEWAY_VAULT_TOKEN_FILE", "gateway-vault.token", "vault", "gateway", "manage"),
    Grant("ROUTER_VAULT_TOKEN_FILE", "router-vault.token", "vault", "router", "resolve"),
    Grant("GATEWAY_ROUTER_TOKEN_FILE", "gateway-router.token", "router", "gateway", "invoke"),
    # For trying an internal caller by hand (grpcurl against the router): only `invoke`.
    Grant(None, "agent-router.token", "router", "agent", "invoke"),
)


class StackError(Exception):
    """A service could not start or died; the message says which and why."""


def connect_address(listen: str) -> str:
    """Where clients reach a server listening on `listen` (a wildcard becomes loopback)."""
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"{host}:{port}"


def _with_free_port(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if port != "0":
        return listen
    bare = host.strip("[]") or "127.0.0.1"
    with socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET) as s:
        s.bind((bare, 0))
        return f"{host}:{s.getsockname()[1]}"


@dataclass(frozen=True)
class DevConfig:
    """Where the state lives, where each service listens, and the environment they all get."""

    state_dir: Path
    listen: dict[str, str]
    env: dict[str, str] = field(repr=False)

    @property
    def gateway_url(self) -> str:
        return "http://" + connect_address(self.listen["gateway"])

    def path(self, env_name: str | None, default_name: str) -> Path:
        value = self.env.get(env_name, "") if env_name else ""
        return Path(value) if value else self.state_dir / default_name


def build_config(environ: Mapping[str, str]) -> DevConfig:
    """The configuration for one `make run`, from the caller's environment."""
    state = Path(environ.get("STATE_DIR") or ".state").resolve()
    listen = {
        name: _with_free_port(environ.get(f"{name.upper()}_LISTEN") or DEFAULT_LISTEN[name])
        for name in SERVICES
    }
    env = dict(environ)
    env.update(
        STATE_DIR=str(state),
        VAULT_LISTEN=listen["vault"],
        ROUTER_LISTEN=listen["router"],
        GATEWAY_LISTEN=listen["gateway"],
        ROUTER_VAULT_ADDR=connect_address(listen["vault"]),
        GATEWAY_VAULT_ADDR=connect_address(listen["vault"]),
        GATEWAY_ROUTER_ADDR=connect_address(listen["router"]),
    )
    env.setdefault("VAULT_GENERATE_DEV_KEY", "true")
    env.setdefault("GATEWAY_COOKIE_SECURE", "false")  # plain http on localhost
    env.setdefault("GATEWAY_ORIGIN", "http://" + connect_address(listen["gateway"]))
    return DevConfig(state, listen, env)


def prepare_state(config: DevConfig) -> None:
    """Create the caller tokens that are missing, then (re)write both callers files."""
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    callers: dict[str, dict[str, tuple[str, list[str]]]] = {"vault": {}, "router": {}}
    for grant in GRANTS:
        path = config.path(grant.token_env, grant.token_file)
        if not path.exists():
            write_private_file(path, new_caller_token() + "\n")
        callers[grant.server][grant.caller] = (path.read_text("utf-8").strip(), [grant.right])
    for server, entries in callers.items():
        callers_env = f"{server.upper()}_CALLERS_FILE"
        write_callers_file(config.path(callers_env, f"{server}-callers.json"), entries)


class Stack:
    """The three service processes, started in order and stopped in reverse."""

    def __init__(self, config: DevConfig, output: IO[bytes] | None = None) -> None:
        self.config = config
        self.output = output  # where the services log (default: our stdout and stderr)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        for name in SERVICES:
            # Own session: a terminal's Ctrl-C reaches only us, and we stop them in order.
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}.server"],
                env=self.config.env,
                stdout=self.output,
                stderr=self.output,
                start_new_session=True,
                # No preexec_fn: it forces fork() instead of vfork(), and forking a process
                # that has gRPC threads (our health probes) can hang the child.
            )
            print(f"  {name:<8} starting, pid {self.processes[name].pid}", file=sys.stderr)
            self._wait_ready(name, should_stop)

    def _probe(self, name: str) -> str | None:
        if name == "gateway":
            return http_healthy(self.config.gateway_url + "/readyz", timeout=1.0)
        return grpc_serving(connect_address(self.config.listen[name]), timeout=1.0)

    def _wait_ready(self, name: str, should_stop: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = self.processes[name].poll()
            if code is not None:
                raise StackError(f"{name} exited with status {code} while starting")
            problem = self._probe(name)
            if problem is None:
                return
            if should_stop():
                raise StackError("interrupted while starting")
            if time.monotonic() > deadline:
                raise StackError(f"{name} not ready after {READY_TIMEOUT:.0f} s: {problem}")
            time.sleep(0.1)

    def died(self) -> tuple[str, int] | None:
        """The first service that has exited, with its status."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self) -> bool:
        """Stop every service (SIGTERM, then SIGKILL); True if all exited cleanly."""
        clean = True
        for name, process in reversed(self.processes.items()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop in {STOP_GRACE:.0f} s: killing it", file=sys.stderr)
                    process.kill()
                    process.wait()
            clean = clean and process.returncode in (0, -signal.SIGTERM)
            print(f"{name} stopped (status {process.returncode})", file=sys.stderr)
        return clean


def _admin_command() -> list[str]:
    script = Path(sys.executable).with_name("aicreds-admin")
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.vault.admin"]


def create_api_token(config: DevConfig, user: str = "demo", name: str = "make-run") -> str:
    """A new API token for `user`, made with `aicreds-admin` against the state directory."""
    result = subprocess.run(
        [*_admin_command(), "create-token", "--user", user, "--name", name],
        env=config.env,
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,  # a Ctrl-C now stops the services after it, not it halfway
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("sk-aic-"):
        sys.stderr.write(result.stderr)
        raise StackError(f"aicreds-admin create-token failed (status {result.returncode})")
    return lines[-1].strip()


def _token_works(config: DevConfig, token: str) -> bool:
    url = config.gateway_url + "/api/v2/users/me/ai-credentials?masked=true"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def ensure_api_token(config: DevConfig) -> str:
    """The demo user's token kept in the state directory, made anew if it does not work."""
    path = config.state_dir / API_TOKEN_FILE
    if path.exists():
        token = path.read_text("utf-8").strip()
        if _token_works(config, token):
            return token
    token = create_api_token(config)
    write_private_file(path, token + "\n")
    return token


def banner(config: DevConfig, stack: Stack, token: str) -> str:
    pids = {name: p.pid for name, p in stack.processes.items()}
    url = config.gateway_url
    return f"""
aicreds is running; state in {config.state_dir}
  vault    {config.listen["vault"]:<24} gRPC  pid {pids["vault"]}
  router   {config.listen["router"]:<24} gRPC  pid {pids["router"]}
  gateway  {url:<24} HTTP  pid {pids["gateway"]}

API token: {token}
Web UI:    {url}/ui/  (sign in with the API token above)

Try it:
  curl -X PUT "{url}/api/v2/users/me/ai-credentials/openai_api_key" \\
    -H "Authorization: Bearer {token}" \\
    -H "Content-Type: application/json" -d '{{"value": "sk-your-openai-api-key"}}'
  curl "{url}/api/v2/users/me/ai-credentials" -H "Authorization: Bearer {token}"

Another user's token: STATE_DIR={config.state_dir} .venv/bin/aicreds-admin create-token --user alice
Press Ctrl-C to stop.
"""


def main() -> int:
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    config = build_config(os.environ)
    prepare_state(config)
    stack = Stack(config)
    failed = False
    try:
        stack.start(should_stop=lambda: stop_requested)
        print(banner(config, stack, ensure_api_token(config)), flush=True)
        while not stop_requested:
            dead = stack.died()
            if dead is not None:
                print(
                    f"{dead[0]} exited with status {dead[1]}; stopping the others", file=sys.stderr
                )
                failed = True
                break
            time.sleep(0.2)
    except StackError as err:
        failed = not stop_requested
        print(f"make run: {err}", file=sys.stderr)
    finally:
        clean = stack.stop()
    if failed or not clean:
        print("make run: stopped after a failure", file=sys.stderr)
        return 1
    print("make run: every service stopped cleanly", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Starting what a bench run measures: the fake upstream and the three services, on 127.0.0.1.

Each service runs as its own process from its console script (`aicreds-vault`, ...), configured
only through the documented environment variables, with state in a fresh temporary `STATE_DIR`
and its log in the results folder. The bench writes the callers files itself so that, besides
the usual wiring (gateway -> vault `manage`, gateway -> router `invoke`, router -> vault
`resolve`), two bench callers exist: `bench-agent` (router `invoke`, the internal-agent path) and
`bench-resolver` (vault `resolve`, to time `Resolve` alone). Caller authentication stays on.

Then, through the public REST API and as a real user would: a token from `aicreds-admin
create-token --user bench`, a credential `openai_api_key`, and a provider `bench` whose header is
`Authorization: Bearer {{credential:openai_api_key}}` pointing at the fake upstream, which
answers 401 to any other Authorization value.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.fake_upstream import EXPECTED_AUTH_ENV, UpstreamConfig, free_port, worker_command

SERVICES = ("vault", "router", "gateway")
BENCH_USER = "bench"
BENCH_MODEL = "bench-model"
BENCH_PROVIDER = "bench"
CREDENTIAL_KEY = "openai_api_key"


class StackError(RuntimeError):
    """The stack could not be started or prepared; the message says which part and why."""


def _bin(name: str) -> str:
    """A console script installed next to this interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    raise StackError(f"{candidate} is missing: install the project first (make venv)")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class Upstream:
    """The running fake upstream."""

    port: int
    procs: list[subprocess.Popen[bytes]]
    config: UpstreamConfig

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        stop_processes(self.procs)


def start_upstream(config: UpstreamConfig, workers: int, log: IO[bytes]) -> Upstream:
    """Start `workers` fake-upstream processes sharing one free port."""
    port = free_port()
    env = dict(os.environ)
    env.pop(EXPECTED_AUTH_ENV, None)
    if config.expected_auth is not None:
        env[EXPECTED_AUTH_ENV] = config.expected_auth.decode()
    procs = [
        subprocess.Popen(
            worker_command("127.0.0.1", port, config),
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        for _ in range(max(1, workers))
    ]
    upstream = Upstream(port=port, procs=procs, config=config)
    try:
        _wait_port(port, procs[0], "the fake upstream", 20)
    except Exception:
        upstream.stop()
        raise
    return upstream


@dataclass
class Stack:
    """The three running services and what the bench needs to call them."""

    state_dir: Path
    vault_addr: str
    router_addr: str
    gateway_url: str
    procs: dict[str, subprocess.Popen[bytes]]
    agent_token: str = field(repr=False)
    resolver_token: str = field(repr=False)
    user_token: str = field(default="", repr=False)
    user_id: str = BENCH_USER
    # Every vault process, `vault_addr` first; more than one when they share a PostgreSQL
    # database (the extra ones are `vault.2`, `vault.3`, ... in `procs`).
    vault_addrs: list[str] = field(default_factory=list)

    def pid(self, service: str) -> int:
        return self.procs[service].pid

    def check_alive(self) -> None:
        """StackError naming any service that has exited."""
        dead = [f"{n} (exit {p.returncode})" for n, p in self.procs.items() if p.poll() is not None]
        if dead:
            raise StackError("service exited during the bench: " + ", ".join(dead))

    def stop(self) -> None:
        # Gateway first, vault last: the reverse of the start order.
        stop_processes(list(reversed(self.procs.values())))


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stack_environment(
    state_dir: Path, ports: Mapping[str, int], base: Mapping[str, str]
) -> dict[str, str]:
    """The environment every service process gets: `base` plus the bench's wiring."""
    env = {k: v for k, v in base.items() if not k.startswith(("VAULT_", "ROUTER_", "GATEWAY_"))}
    vault = f"127.0.0.1:{ports['vault']}"
    router = f"127.0.0.1:{ports['router']}"
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "STATE_DIR": str(state_dir),
            "VAULT_LISTEN": vault,
            "VAULT_GENERATE_DEV_KEY": "true",
            "VAULT_CALLERS_FILE": str(state_dir / "vault-callers.json"),
            "ROUTER_LISTEN": router,
            "ROUTER_VAULT_ADDR": vault,
            "ROUTER_VAULT_TOKEN_FILE": str(state_dir / "router-vault.token"),
            "ROUTER_CALLERS_FILE": str(state_dir / "router-callers.json"),
            "ROUTER_EGRESS_ALLOW": "127.0.0.1",
            "GATEWAY_LISTEN": f"127.0.0.1:{ports['gateway']}",
            "GATEWAY_VAULT_ADDR": vault,
            "GATEWAY_ROUTER_ADDR": router,
            "GATEWAY_VAULT_TOKEN_FILE": str(state_dir / "gateway-vault.token"),
            "GATEWAY_ROUTER_TOKEN_FILE": str(state_dir / "gateway-router.token"),
            # The bench measures the stack, not the rate limiters refusing it: per token, per
            # user (all the bench's load is one user's), and the user's calls in flight.
            "GATEWAY_RATE_LIMIT": "1000000",
            "GATEWAY_RATE_BURST": "1000000",
            "GATEWAY_USER_RATE_LIMIT": "1000000",
            "GATEWAY_USER_RATE_BURST": "1000000",
            "GATEWAY_USER_MAX_CONCURRENT_CALLS": "100000",
        }
    )
    # Operator overrides for a run, e.g. BENCH_ENV_GATEWAY_LOG_LEVEL=WARNING.
    for key, value in base.items():
        if key.startswith("BENCH_ENV_"):
            env[key[len("BENCH_ENV_") :]] = value
    return env


def write_callers(state_dir: Path) -> tuple[str, str]:
    """Caller tokens and callers files for the three services and the two bench callers.

    Returns (bench-agent token, bench-resolver token).
    """
    from services.common.callers import (
        new_caller_token,
        write_callers_file,
        write_private_file,
    )

    gateway_vault = new_caller_token()
    gateway_router = new_caller_token()
    router_vault = new_caller_token()
    agent = new_caller_token()
    resolver = new_caller_token()
    write_callers_file(
        state_dir / "vault-callers.json",
        {
            "gateway": (gateway_vault, ["manage"]),
            "router": (router_vault, ["resolve"]),
            "bench-resolver": (resolver, ["resolve"]),
        },
    )
    write_callers_file(
        state_dir / "router-callers.json",
        {"gateway": (gateway_router, ["invoke"]), "bench-agent": (agent, ["invoke"])},
    )
    write_private_file(state_dir / "gateway-vault.token", gateway_vault + "\n")
    write_private_file(state_dir / "gateway-router.token", gateway_router + "\n")
    write_private_file(state_dir / "router-vault.token", router_vault + "\n")
    return agent, resolver


def _wait_grpc_health(addr: str, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{what} exited with {proc.returncode} while starting")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise StackError(f"{what} was not SERVING on {addr} within {timeout:.0f} s")


def _wait_http_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode} while starting")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as err:
            last = type(err).__name__
        time.sleep(0.1)
    raise StackError(f"{what} was not ready at {url} within {timeout:.0f} s ({last})")


def _spawn(command: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [_bin(command)],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_stack(
    state_dir: Path, log_dir: Path, base_env: Mapping[str, str], vault_replicas: int = 1
) -> Stack:
    """Start vault, router and gateway (in that order), each ready before the next.

    With `vault_replicas` > 1 (the vault on PostgreSQL, `VAULT_DATABASE` in `base_env` as
    `BENCH_ENV_VAULT_DATABASE`), the further vault processes start once the first is serving
    (it has migrated the database and written the dev keyring they share), each on its own port,
    with the same environment otherwise. The router and gateway talk to the first.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    agent, resolver = write_callers(state_dir)
    ports = {name: free_port() for name in SERVICES}
    env = stack_environment(state_dir, ports, base_env)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stack = Stack(
        state_dir=state_dir,
        vault_addr=f"127.0.0.1:{ports['vault']}",
        router_addr=f"127.0.0.1:{ports['router']}",
        gateway_url=f"http://127.0.0.1:{ports['gateway']}",
        procs=procs,
        agent_token=agent,
        resolver_token=resolver,
        vault_addrs=[f"127.0.0.1:{ports['vault']}"],
    )
    try:
        for name in SERVICES:
            procs[name] = _spawn(f"aicreds-{name}", env, log_dir / f"{name}.log")
            if name == "gateway":
                _wait_http_ready(f"{stack.gateway_url}/readyz", procs[name], name, 60)
            else:
                _wait_grpc_health(getattr(stack, f"{name}_addr"), procs[name], name, 60)
            if name != "vault":
                continue
            for replica in range(2, vault_replicas + 1):
                label, addr = f"vault.{replica}", f"127.0.0.1:{free_port()}"
                procs[label] = _spawn(
                    "aicreds-vault", {**env, "VAULT_LISTEN": addr}, log_dir / f"{label}.log"
                )
                _wait_grpc_health(addr, procs[label], label, 60)
                stack.vault_addrs.append(addr)
        try:
            stack.user_token = create_user_token(env, BENCH_USER)
        except StackError as err:
            # The operator command is the documented way; the vault's own CreateToken, called
            # with the gateway's caller token (right `manage`), is the same operation.
            print(f"bench: {err}; creating the token through the vault's gRPC instead")
            stack.user_token = create_token_over_grpc(stack, BENCH_USER)
    except BaseException:
        stack.stop()
        raise
    return stack


def create_user_token(env: Mapping[str, str], user: str) -> str:
    """`aicreds-admin create-token --user USER`: it prints only the token."""
    result = subprocess.run(
        [_bin("aicreds-admin"), "create-token", "--user", user],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    tokens = [w for w in result.stdout.split() if w.startswith("sk-aic-")]
    if result.returncode != 0 or not tokens:
        # stderr, never stdout: stdout would hold the token.
        raise StackError(
            f"aicreds-admin create-token failed (exit {result.returncode}): "
            + result.stderr.strip()[-500:]
        )
    return tokens[-1]


def create_token_over_grpc(stack: Stack, user: str) -> str:
    """`AuthService/CreateToken` with the gateway's vault caller token."""
    import grpc
    from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc

    from services.common.callers import read_secret_file

    caller = read_secret_file(stack.state_dir / "gateway-vault.token")
    with grpc.insecure_channel(stack.vault_addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        try:
            reply = stub.CreateToken(
                auth_pb2.CreateTokenRequest(user_id=user, name="bench"),
                metadata=(("authorization", f"Bearer {caller}"),),
                timeout=10.0,
            )
        except grpc.RpcError as err:
            raise StackError(f"CreateToken failed: {err.code().name}") from None
    token: str = reply.token
    return token


def provider_body(upstream_base_url: str) -> dict[str, Any]:
    """The bench provider: an OpenAI-style upstream whose key comes from a placeholder."""
    return {
        "name": BENCH_PROVIDER,
        "kind": "openai",
        "base_url": f"{upstream_base_url}/v1",
        "headers": {"Authorization": [f"Bearer {{{{credential:{CREDENTIAL_KEY}}}}}"]},
        "models": [BENCH_MODEL],
        "on_missing_credential": "error",
    }


def prepare_user(stack: Stack, upstream_base_url: str, upstream_key: str) -> None:
    """Store the credential and the provider through REST; learn the user id."""
    import httpx

    headers = {"Authorization": f"Bearer {stack.user_token}", "X-Debug-Auth": "true"}
    api = f"{stack.gateway_url}/api/v2/users/me"
    with httpx.Client(headers=headers, timeout=10.0) as client:
        put = client.put(f"{api}/ai-credentials/{CREDENTIAL_KEY}", json={"value": upstream_key})
        _expect(put, "PUT /ai-credentials/{key}")
        stack.user_id = _user_id_from_debug(put.headers.get("x-debug-auth", "")) or BENCH_USER
        body = provider_body(upstream_base_url)
        created = client.post(f"{api}/ai-providers", json=body)
        if created.status_code == 409:
            created = client.put(f"{api}/ai-providers/{BENCH_PROVIDER}", json=body)
        _expect(created, "saving the bench provider")


def _expect(response: Any, what: str) -> None:
    if response.status_code != 200 and response.status_code != 201:
        raise StackError(f"{what}: HTTP {response.status_code} {response.text[:300]}")


def _user_id_from_debug(header: str) -> str | None:
    """The user id in an X-Debug-Auth header, JSON or `key=value` pairs; None if absent."""
    if not header:
        return None
    try:
        data = json.loads(header)
        if isinstance(data, dict):
            value = data.get("user_id") or data.get("user")
            return str(value) if value else None
    except json.JSONDecodeError:
        pass
    for part in header.replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() in ("user_id", "user") and value.strip():
            return value.strip().strip('"')
    return None


def new_upstream_key() -> str:
    """A fresh fake provider key for this run (what the placeholder must be replaced with)."""
    return "sk-bench-" + secrets.token_urlsafe(24)

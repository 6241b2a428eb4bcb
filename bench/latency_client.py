"""A closed-loop HTTP/1.1 load generator that records every request's time, uncorrected.

wrk 4.1 corrects its latency histogram for coordinated omission: after a run it adds, for every
request slower than twice the mean interval between a connection's requests, synthetic samples
at that latency minus one, two, ... intervals (see `bench.latency.wrk_corrected`). At c=1 that
turns a handful of real stalls into a fat p99. This client reports what each request took and
nothing else, so both figures can be shown side by side.

It runs as its own process (`python -m bench.latency_client`, one event loop on uvloop), so that
its CPU does not share the bench's event loop: `concurrency` keep-alive connections, each sending
its next request from the callback that completes the previous answer (no task switch), timed
with `perf_counter_ns` from just before the write to the last byte of the answer. Every status
outside 2xx counts as an error, as does a connection closed before the answer ended (it
reconnects). Times go to a binary file of int64 nanoseconds; a JSON report goes to stdout.

Its cost, measured against the fake upstream (bench/README.md): 10-15 µs of CPU per request,
against wrk's 10-16 µs and `hey`'s 41-75 µs (each run reports its own `cpu_us_per_request`),
and its timestamps have nanosecond resolution where `hey -o csv` prints 0.1 ms. wrk stays the
throughput figure.

With `"stream": true` in its spec it is also the streaming scenarios' load generator: it then
records, for each 2xx answer, the time to the first body byte as well (a second file), and an
answer that ends without `[DONE]` in its last bytes is no success but a `truncated_stream`
error. It replaced an httpx client there, which spent 3-4 ms of CPU per 16-event stream (h11
parsing each chunk, httpx's pool and stream objects) on the same two cores as the services it
measured; this one spends about 0.2 ms (half of it in the kernel, one `recv` per event).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import itertools
import json
import resource
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

_HEAD_END = b"\r\n\r\n"
_CHUNKED_END = b"0\r\n\r\n"
#: What ends a whole event stream (OpenAI's last event), looked for in the answer's last bytes.
STREAM_END = b"[DONE]"
#: How many of an answer's last bytes are searched for `STREAM_END` (the last event, its chunk
#: framing and the last-chunk marker).
_STREAM_TAIL = 96


def build_request(host: str, method: str, path: str, headers: dict[str, str], body: str) -> bytes:
    """One HTTP/1.1 keep-alive request's bytes."""
    data = body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if data or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def response_complete(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(status, length of the whole answer) once `buf` holds a complete response, else None.

    Handles `Content-Length` and `Transfer-Encoding: chunked` (complete when the buffer ends
    with the last-chunk marker: a closed-loop client has one answer in flight, so nothing can
    follow it); an answer with neither ends at its head (as a 204 or 304 does).
    """
    end = buf.find(_HEAD_END)
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    try:
        status = int(head[9:12])
    except ValueError:
        raise ValueError("not an HTTP/1.1 status line") from None
    body_start = end + 4
    marker = head.find(b"\r\ncontent-length:")
    if marker >= 0:
        line_end = head.find(b"\r\n", marker + 2)
        raw = head[marker + 17 : line_end if line_end >= 0 else len(head)]
        total = body_start + int(raw.strip())
        return (status, total) if len(buf) >= total else None
    if b"\r\ntransfer-encoding: chunked" in head:
        if len(buf) - body_start >= 5 and bytes(buf[-5:]) == _CHUNKED_END:
            return status, len(buf)
        return None
    return status, body_start


class _Recorder:
    """What every connection of one run writes into. With `stream`, each 2xx answer must end
    with `STREAM_END`, and its first body byte is timed too (`first_bytes_ns`)."""

    def __init__(self, deadline_ns: int, stream: bool = False) -> None:
        self.deadline_ns = deadline_ns
        self.stream = stream
        self.latencies_ns = array.array("q")
        self.first_bytes_ns = array.array("q")
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.done = asyncio.Event()
        self.open = 0

    def error(self, label: str) -> None:
        self.errors[label] = self.errors.get(label, 0) + 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection in a closed loop."""

    def __init__(self, requests: Iterator[bytes], recorder: _Recorder) -> None:
        self._requests = requests
        self._recorder = recorder
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._sent_ns = 0
        self._first_ns = 0  # when the answer's first body byte came (streams only)
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if time.perf_counter_ns() >= self._recorder.deadline_ns:
            self._transport.close()
            return
        request = next(self._requests)
        self._first_ns = 0
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._recorder.stream and not self._first_ns:
            end = self._buf.find(_HEAD_END)
            if 0 <= end < len(self._buf) - 4:
                self._first_ns = time.perf_counter_ns()
        try:
            answer = response_complete(self._buf)
        except ValueError:
            self._recorder.error("bad_response")
            assert self._transport is not None
            self._transport.close()
            return
        if answer is None:
            return
        now = time.perf_counter_ns()
        status, length = answer
        recorder = self._recorder
        recorder.statuses[status] = recorder.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            if not recorder.stream:
                recorder.latencies_ns.append(now - self._sent_ns)
            elif STREAM_END in self._buf[max(0, length - _STREAM_TAIL) : length]:
                recorder.latencies_ns.append(now - self._sent_ns)
                recorder.first_bytes_ns.append((self._first_ns or now) - self._sent_ns)
            else:
                recorder.error("truncated_stream")
        del self._buf[:length]
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sent_ns and time.perf_counter_ns() < self._recorder.deadline_ns:
            self._recorder.error("closed")
        if not self.lost.done():
            self.lost.set_result(None)


async def _one_connection(host: str, port: int, requests: Sequence[bytes], rec: _Recorder) -> None:
    loop = asyncio.get_running_loop()
    # Each connection starts at its own place in the request list (as wrk's threads do not).
    turn = itertools.cycle(requests)
    while time.perf_counter_ns() < rec.deadline_ns:
        try:
            _, proto = await loop.create_connection(lambda: _Connection(turn, rec), host, port)
        except OSError:
            rec.error("connect")
            await asyncio.sleep(0.01)
            continue
        await proto.lost


async def run(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    stream: bool = False,
) -> tuple[_Recorder, float]:
    """Drive `concurrency` connections for `duration_s`; returns the recorder and elapsed s.
    With `stream`, answers are event streams (see `_Recorder`)."""
    start = time.perf_counter_ns()
    rec = _Recorder(start + int(duration_s * 1e9), stream)
    await asyncio.gather(*(_one_connection(host, port, requests, rec) for _ in range(concurrency)))
    return rec, (time.perf_counter_ns() - start) / 1e9


# --- the bench's side: run the client in its own process, read what it recorded ------------------


@dataclass(frozen=True)
class UncorrectedRun:
    """What one run of the client recorded: every 2xx answer's time, and every status; for
    streams each successful answer's time to its first body byte too (same order)."""

    elapsed_s: float
    statuses: dict[int, int]
    errors: dict[str, int]
    cpu_s: float
    latencies_ns: list[int] = field(repr=False)
    first_bytes_ns: list[int] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> int:
        return len(self.latencies_ns)

    @property
    def completed(self) -> int:
        """Every answer, whatever its status (what wrk calls `complete`)."""
        return sum(self.statuses.values())

    @property
    def error_detail(self) -> dict[str, int]:
        """Non-2xx answers by status (`http_401`) and transport errors (`closed`, ...)."""
        detail = {f"http_{code}": n for code, n in self.statuses.items() if not 200 <= code < 300}
        detail.update({k: v for k, v in self.errors.items() if v})
        return detail

    @property
    def error_count(self) -> int:
        return sum(self.error_detail.values())


def _times(raw: bytes, expected: int, what: str) -> list[int]:
    times = array.array("q")
    times.frombytes(raw)
    if len(times) != expected:
        raise ValueError(f"the {what} file holds {len(times)} times for {expected} answers")
    return times.tolist()


def parse_report(stdout: str, latencies: bytes, first_bytes: bytes | None = None) -> UncorrectedRun:
    """The client's JSON line and its int64 latency file (and, for streams, its first-byte
    file); ValueError when it printed none."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("the latency client printed no report: " + stdout[-500:])
    data: Mapping[str, Any] = json.loads(lines[-1])
    ok = int(data["ok"])
    return UncorrectedRun(
        elapsed_s=float(data["elapsed_s"]),
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
        errors={str(k): int(v) for k, v in data["errors"].items()},
        cpu_s=float(data["cpu_s"]),
        latencies_ns=_times(latencies, ok, "latency"),
        first_bytes_ns=[] if first_bytes is None else _times(first_bytes, ok, "first-byte"),
    )


def client_spec(
    host: str,
    port: int,
    requests: Sequence[tuple[str, str, str]],
    headers: Mapping[str, str],
    stream: bool = False,
) -> dict[str, Any]:
    """The JSON spec the client reads: where to connect, the headers, (method, path, body)s,
    and whether the answers are event streams."""
    return {
        "host": host,
        "port": port,
        "headers": dict(headers),
        "requests": [{"method": m, "path": p, "body": b} for m, p, b in requests],
        "stream": stream,
    }


async def run_client(
    work_dir: Path, name: str, spec: Mapping[str, Any], concurrency: int, duration_s: float
) -> UncorrectedRun:
    """Run the client in its own process (with this interpreter) and read its results."""
    spec_path = work_dir / f"{name}.latency-spec.json"
    out_path = work_dir / f"{name}.latency.bin"
    first_path = work_dir / f"{name}.first-byte.bin"
    # The spec holds a token: it lives in the bench's private work dir.
    spec_path.write_text(json.dumps(spec))
    args = ["--spec", str(spec_path), "--out", str(out_path)]
    if spec.get("stream"):
        args += ["--first-byte-out", str(first_path)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.latency_client",
        *args,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), duration_s + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("the latency client did not finish in time") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"the latency client exited with {proc.returncode}: {stderr.decode()[-500:]}"
        )
    try:
        first = first_path.read_bytes() if spec.get("stream") else None
        return parse_report(stdout.decode(), out_path.read_bytes(), first)
    finally:
        out_path.unlink(missing_ok=True)
        first_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON: host, port, requests")
    parser.add_argument("--out", type=Path, required=True, help="int64 ns latencies go here")
    parser.add_argument(
        "--first-byte-out", type=Path, help="streams: int64 ns times to the first body byte"
    )
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    # The spec holds a token: it is read from a private file, never from argv.
    spec = json.loads(args.spec.read_text())
    host, port = spec["host"], int(spec["port"])
    requests = [
        build_request(
            f"{host}:{port}", r["method"], r["path"], spec.get("headers", {}), r.get("body", "")
        )
        for r in spec["requests"]
    ]
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        pass
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    stream = bool(spec.get("stream", False))
    rec, elapsed = asyncio.run(run(host, port, requests, args.concurrency, args.duration, stream))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    with args.out.open("wb") as out:
        rec.latencies_ns.tofile(out)
    if args.first_byte_out is not None:
        with args.first_byte_out.open("wb") as out:
            rec.first_bytes_ns.tofile(out)
    report = {
        "elapsed_s": elapsed,
        "ok": len(rec.latencies_ns),
        "statuses": {str(k): v for k, v in sorted(rec.statuses.items())},
        "errors": rec.errors,
        "cpu_s": cpu,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

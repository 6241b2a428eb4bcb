"""A competing disk writer: another process writing and syncing a file on the state volume.

Issue 20 found the vault's c=1 tail was its audit commit's `fdatasync` waiting behind other
writes to the same disk. This process reproduces such a neighbour on purpose: in a loop it
writes a block (4 MiB by default) of random bytes into a file in the given directory (the
bench's `STATE_DIR`, where the vault's SQLite database lives), cycling over a fixed span of the
file (64 MiB by default, so the disk use stays bounded), and calls `fdatasync` after each block.
On SIGTERM it prints one JSON line (blocks, MiB/s, sync times) and deletes its file.

Run it alone with `python -m bench.disk_writer --dir /some/dir`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

FILE_NAME = "bench-disk-writer.dat"
MIB = 1024 * 1024


def write_loop(directory: Path, block_mib: int, span_mib: int, stop: list[bool]) -> dict[str, Any]:
    """Write and fdatasync blocks until `stop[0]` is set; returns what was done."""
    block = os.urandom(block_mib * MIB)
    slots = max(1, span_mib // block_mib)
    path = directory / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    sync_ms: list[float] = []
    start = time.monotonic()
    try:
        while not stop[0]:
            os.pwrite(fd, block, (len(sync_ms) % slots) * len(block))
            t0 = time.perf_counter()
            os.fdatasync(fd)
            sync_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    elapsed = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    ordered = sorted(sync_ms) or [0.0]
    return {
        "blocks": len(sync_ms),
        "block_mib": block_mib,
        "seconds": round(elapsed, 2),
        "mib_per_s": round(len(sync_ms) * block_mib / elapsed, 1) if elapsed > 0 else 0.0,
        "fdatasync_ms_p50": round(ordered[len(ordered) // 2], 2),
        "fdatasync_ms_max": round(ordered[-1], 2),
        # It competes for CPU too (copying blocks into the page cache): how much it took.
        "cpu_s": round(cpu, 2),
        "cpu_share_of_one_core": round(cpu / elapsed, 2) if elapsed > 0 else 0.0,
    }


class DiskWriter:
    """`async with DiskWriter(state_dir):` the writer process runs; `.report` afterwards."""

    def __init__(self, directory: Path, block_mib: int = 4, span_mib: int = 64) -> None:
        self._directory = directory
        self._block_mib = block_mib
        self._span_mib = span_mib
        self._proc: asyncio.subprocess.Process | None = None
        self.report: dict[str, Any] = {}

    async def __aenter__(self) -> DiskWriter:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.disk_writer",
            "--dir",
            str(self._directory),
            "--block-mib",
            str(self._block_mib),
            "--span-mib",
            str(self._span_mib),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self.report = {"error": "the disk writer did not stop within 30 s"}
            return
        lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
        if lines:
            self.report = json.loads(lines[-1])
        else:
            self.report = {"error": f"exit {proc.returncode}: {stderr.decode()[-300:]}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--block-mib", type=int, default=4)
    parser.add_argument("--span-mib", type=int, default=64)
    args = parser.parse_args(argv)
    stop = [False]

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    report = write_loop(args.dir, max(1, args.block_mib), max(1, args.span_mib), stop)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Optional sampling profiles of the services under load (`BENCH_PROFILE=true`), with py-spy.

After the measured runs, the bench drives the gateway at one concurrency for one run's duration
while py-spy samples each service (`--nonblocking`, so the services are never paused). The
collapsed stacks are kept as `profile-<service>.txt` (feed them to any flame-graph tool) and
summarised into the functions with the most samples: *self* (the function itself was running)
and *inclusive* (it was anywhere on the stack), also restricted to our own code (`services/`).
Time spent in C extensions (uvloop, grpc core, sqlite) shows under the Python frame that called
them. Profiled runs are not part of the figures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """py-spy from the venv (the `bench` extra) or PATH."""
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


def start(
    tool: str, pids: Mapping[str, int], duration_s: float, out_dir: Path
) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """One py-spy recorder per service, each for `duration_s`."""
    recorders = {}
    for name, pid in pids.items():
        output = out_dir / f"profile-{name}.txt"
        cmd = [
            tool,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration_s))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--function",
            "--nonblocking",
            "--subprocesses",
            "--output",
            str(output),
        ]
        log = (out_dir / f"profile-{name}.log").open("wb")
        recorders[name] = (subprocess.Popen(cmd, stdout=log, stderr=log), output)
        log.close()
    return recorders


def parse_collapsed(lines: Iterable[str]) -> tuple[Counter[str], Counter[str], int]:
    """(self samples, inclusive samples, total) per frame from `frame;frame;... count` lines."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # The first frame is the process/thread name py-spy adds, not code.
        frames = [f.strip() for f in stack.split(";")[1:] if f.strip()]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return self_counts, inclusive, total


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """The top frames of one collapsed-stack file, as percentages of its samples."""
    if not path.exists():
        return {"error": "py-spy wrote no profile (see the .log beside it)"}
    with path.open() as handle:
        self_counts, inclusive, total = parse_collapsed(handle)
    if total == 0:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "pct": round(count / total * 100, 1)}
            for frame, count in counter.most_common(top)
        ]

    ours: Counter[str] = Counter({f: c for f, c in inclusive.items() if "services/" in f})
    return {
        "samples": total,
        "top_self": share(self_counts),
        "top_inclusive": share(inclusive),
        # Our own functions, by the share of samples they were on the stack for: where the
        # time goes in terms of the code we can change.
        "top_project_inclusive": share(ours),
    }


def finish(
    recorders: Mapping[str, tuple[subprocess.Popen[bytes], Path]], timeout: float
) -> dict[str, Any]:
    """Wait for every recorder and summarise what it wrote."""
    summaries = {}
    for name, (proc, output) in recorders.items():
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        summaries[name] = summarize(output)
    return summaries


def markdown(profiles: Mapping[str, Any], scenario: str = "gateway", top: int = 8) -> list[str]:
    """Lines for summary.md: per service, the frames with the most self samples."""
    out = ["", f"## Profiles (py-spy, {scenario} load)", ""]
    for name, summary in profiles.items():
        if "top_self" not in summary:
            out.append(f"- {name}: {summary.get('error', 'no samples')}")
            continue
        out.append(f"**{name}** — {summary['samples']} samples; most self time:")
        out.append("")
        for entry in summary["top_self"][:top]:
            out.append(f"- {entry['pct']:.1f} % `{entry['frame']}`")
        out.append("")
        ours = summary.get("top_project_inclusive") or []
        if ours:
            out.append("our code, share of samples on the stack (inclusive):")
            out.append("")
            for entry in ours[:top]:
                out.append(f"- {entry['pct']:.1f} % `{entry['frame']}`")
            out.append("")
    return out

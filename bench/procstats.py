"""CPU time and memory of a service, read from /proc (Linux).

A service is a process and any children it forks (counted together). CPU is utime + stime of
`/proc/<pid>/stat`; memory is VmRSS (now) and VmHWM (peak since start, or since the peak was
last reset by writing `5` to `/proc/<pid>/clear_refs`, which lets each run report its own peak).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def parse_stat_cpu_ticks(stat_line: str) -> tuple[int, int]:
    """(utime + stime in clock ticks, ppid) from a /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may hold spaces, so fields are counted
    from the last `)`.
    """
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15; ppid is field 4.
    ppid = int(rest[1])
    utime = int(rest[11])
    stime = int(rest[12])
    return utime + stime, ppid


def parse_status_kib(status_text: str, field: str) -> int:
    """A `Field:   1234 kB` value of /proc/<pid>/status in KiB (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        if text is None:
            continue
        try:
            _, ppid = parse_stat_cpu_ticks(text)
        except (ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if (_PROC / str(pid)).exists():
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class Snapshot:
    """One reading of a service's process tree."""

    cpu_seconds: float
    rss_kib: int
    hwm_kib: int


def snapshot(root: int) -> Snapshot:
    """CPU seconds, current RSS and peak RSS of `root` and its children, summed."""
    ticks = rss = hwm = 0
    for pid in process_tree(root):
        stat = _read(_PROC / str(pid) / "stat")
        status = _read(_PROC / str(pid) / "status")
        if stat is None or status is None:
            continue
        ticks += parse_stat_cpu_ticks(stat)[0]
        rss += parse_status_kib(status, "VmRSS")
        hwm += parse_status_kib(status, "VmHWM")
    return Snapshot(cpu_seconds=ticks / _CLK_TCK, rss_kib=rss, hwm_kib=hwm)


def reset_peak(root: int) -> bool:
    """Reset VmHWM of the tree to the current RSS; False where the kernel refuses."""
    ok = True
    for pid in process_tree(root):
        try:
            (_PROC / str(pid) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def cpu_seconds_of(pids: list[int]) -> float:
    """CPU seconds of exactly these processes (no children), those still alive."""
    ticks = 0
    for pid in pids:
        stat = _read(_PROC / str(pid) / "stat")
        if stat is None:
            continue
        try:
            ticks += parse_stat_cpu_ticks(stat)[0]
        except (ValueError, IndexError):
            continue
    return ticks / _CLK_TCK

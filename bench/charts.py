"""PNG charts of one bench: latency percentiles against concurrency, throughput, streaming.

matplotlib with the non-interactive Agg backend; if matplotlib is not installed the bench still
writes results.json and summary.md and says how to get the charts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LATENCY_SCENARIOS = ("direct", "gateway", "router_grpc", "vault_resolve")
# Also drawn when present: `vault_resolve_pg<N>` (the vault on PostgreSQL, N replicas).
PG_PREFIX = "vault_resolve_pg"
STREAM_SCENARIOS = ("stream_direct", "stream_gateway")


def _series(
    runs: Sequence[Mapping[str, Any]], scenario: str, figure: str, key: str
) -> tuple[list[int], list[float]]:
    points = sorted(
        (int(r["concurrency"]), float(r[figure][key]))
        for r in runs
        if r["scenario"] == scenario and r.get(figure)
    )
    return [c for c, _ in points], [v for _, v in points]


def write_charts(directory: Path, results: Mapping[str, Any]) -> list[str]:
    """Write the charts into `directory`; returns their file names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        print("bench: matplotlib is missing, no charts (pip install -e '.[bench]')")
        return []
    runs = results["runs"]
    written: list[str] = []
    levels = sorted({int(r["concurrency"]) for r in runs})
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    # Minor ticks labelled only at 2 and 5 of each decade, so that labels do not collide.
    sparse = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")

    def log_axes(ax: Any) -> None:
        """Log-log axes labelled with the concurrencies and plain numbers, not powers."""
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(sparse)
        ax.set_xlabel("concurrency")
        ax.grid(True, which="both", alpha=0.3)

    present = [s for s in LATENCY_SCENARIOS if any(r["scenario"] == s for r in runs)]
    present += sorted({str(r["scenario"]) for r in runs if r["scenario"].startswith(PG_PREFIX)})
    if present:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
        for ax, key in zip(axes, ("p50", "p90", "p99"), strict=True):
            for scenario in present:
                xs, ys = _series(runs, scenario, "latency_ms", key)
                if xs:
                    ax.plot(xs, ys, marker="o", label=scenario)
            log_axes(ax)
            ax.set_title(f"latency {key}")
        axes[0].set_ylabel("ms (log)")
        axes[0].legend()
        fig.suptitle("Latency percentiles against concurrency")
        fig.tight_layout()
        fig.savefig(directory / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for scenario in present:
            points = sorted(
                (int(r["concurrency"]), float(r["rps"])) for r in runs if r["scenario"] == scenario
            )
            ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=scenario)
        log_axes(ax)
        ax.set_ylabel("requests/s (log)")
        ax.set_title("Throughput against concurrency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "throughput.png", dpi=110)
        plt.close(fig)
        written.append("throughput.png")

    streams = [r for r in runs if r["scenario"] in STREAM_SCENARIOS and r.get("ttfb_ms")]
    if streams:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        labels = [f"{r['scenario']}\nc={r['concurrency']}" for r in streams]
        xs = list(range(len(streams)))
        width = 0.2
        for offset, (figure, key) in enumerate(
            (("ttfb_ms", "p50"), ("ttfb_ms", "p99"), ("end_ms", "p50"), ("end_ms", "p99"))
        ):
            values = [float((r.get(figure) or {}).get(key, 0.0)) for r in streams]
            ax.bar(
                [x + (offset - 1.5) * width for x in xs],
                values,
                width,
                label=f"{figure[:-3]} {key}",
            )
        ax.set_xticks(xs, labels)
        ax.set_ylabel("ms")
        ax.set_title("Streaming: time to first byte and to the end")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(directory / "streaming.png", dpi=110)
        plt.close(fig)
        written.append("streaming.png")

    soak = results.get("soak")
    if soak and soak.get("timeline"):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        timeline = soak["timeline"]
        ts = [p["t"] for p in timeline]
        for name in sorted({n for p in timeline for n in p["rss_mib"]}):
            ax.plot(ts, [p["rss_mib"].get(name, 0.0) for p in timeline], label=name)
        ax.set_xlabel("s")
        ax.set_ylabel("RSS MiB")
        ax.set_title(f"Soak at c={soak['concurrency']}: RSS over time")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "soak.png", dpi=110)
        plt.close(fig)
        written.append("soak.png")
    return written

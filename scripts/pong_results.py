"""Pong learning curves of pgrl runs beside Karpathy's gist, as a PNG and a markdown table.

    python scripts/pong_results.py docs/results/pong_curves.png \
        "pong.toml, NumPy=docs/results/pong-numpy.csv" \
        "pong_fast.toml, NumPy=docs/results/pong_fast-numpy.csv"

Each run is ``label=metrics.csv`` (a run directory's metrics.csv), or ``label=a.csv+b.csv`` for
a run ``b`` that started from ``a``'s final weights (``pgrl train --init``). Running return is
Karpathy's (0.99 old + 0.01 episode return, from the first episode). A threshold counts as
reached at its first crossing after episode 100, when the running return has mostly forgotten its
start (the gist's reference figures count after episode 500; their thresholds are all crossed
after episode 1,200, where the two rules agree). The gist's figures (two seeds, one core each of
this machine, both cores busy) are drawn as markers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pgrl.rundir import read_metrics

THRESHOLDS = (-20.0, -19.0, -15.0, -10.0, 0.0, 10.0)
AFTER_EPISODE = 100
# Karpathy's gist on this machine: (episode, running return) crossings and (minutes, return).
GIST = {
    "gist seed 0": {
        "episodes": [(1225, -20), (2775, -19.5), (3975, -19), (4975, -18.5), (5575, -17.99)],
        "minutes": [(95, -19), (146, -17.99)],
    },
    "gist seed 1": {
        "episodes": [(1525, -20), (2500, -19.5), (3650, -19), (4325, -18.5), (4550, -18.35)],
        "minutes": [(88, -19), (117, -18.35)],
    },
}


def read_run(spec: str) -> dict[str, np.ndarray]:
    """A run's metrics; ``a.csv+b.csv`` is a run ``b`` started from ``a``'s final weights
    (``pgrl train --init``), drawn as one curve: ``b``'s episodes, steps and hours follow ``a``'s,
    and its running return continues ``a``'s."""
    parts = []
    for path in spec.split("+"):
        run = read_metrics(Path(path))
        if not run["episode"].size:
            raise SystemExit(f"{path}: no episodes")
        parts.append(run)
    run = parts[0]
    for more in parts[1:]:
        rr = np.empty_like(more["return"])
        last = run["running_return"][-1]
        for i, r in enumerate(more["return"]):
            last = rr[i] = 0.99 * last + 0.01 * r
        shifted = {k: more[k] + run[k][-1] for k in ("episode", "steps", "wall_time")}
        more = {**more, **shifted, "running_return": rr}
        run = {k: np.concatenate([run[k], more[k]]) for k in run}
    return run


def first_crossing(run: dict, threshold: float) -> int | None:
    """Index of the first episode after AFTER_EPISODE whose running return is >= threshold."""
    ok = (run["running_return"] >= threshold) & (run["episode"] > AFTER_EPISODE)
    hits = np.flatnonzero(ok)
    return int(hits[0]) if hits.size else None


def table(runs: dict[str, dict]) -> str:
    head = ["run", "episodes", "hours", "final running return", "steps/s"]
    head += [f"to {t:g}: episodes / steps / hours" for t in THRESHOLDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, run in runs.items():
        hours = run["wall_time"][-1] / 3600
        cells = [
            label,
            f"{int(run['episode'][-1]):,}",
            f"{hours:.2f}",
            f"{run['running_return'][-1]:.2f}",
            f"{run['steps'][-1] / run['wall_time'][-1]:,.0f}",
        ]
        for t in THRESHOLDS:
            i = first_crossing(run, t)
            cells.append(
                "not reached"
                if i is None
                else f"{int(run['episode'][i]):,} / {run['steps'][i] / 1e6:.1f}M / "
                f"{run['wall_time'][i] / 3600:.2f}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ep, ax_h) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for label, run in runs.items():
        # TensorFlow dashed: where it plays the same episodes as NumPy both curves stay visible
        style = "--" if "tensorflow" in label.lower() else "-"
        ax_ep.plot(run["episode"], run["running_return"], style, label=label)
        ax_h.plot(run["wall_time"] / 3600, run["running_return"], style, label=label)
    for (label, ref), marker in zip(GIST.items(), ("o", "s"), strict=True):
        ep, r = zip(*ref["episodes"], strict=True)
        ax_ep.plot(ep, r, ":", marker=marker, color="gray", label=f"Karpathy's {label}")
        mins, r = zip(*ref["minutes"], strict=True)
        ax_h.plot(np.array(mins) / 60, r, ":", marker=marker, color="gray", label=label)
    ax_ep.set_xlabel("episode (one game to 21)")
    ax_h.set_xlabel("wall-clock hours")
    ax_ep.set_ylabel("running return (0.99 old + 0.01 new)")
    for ax in (ax_ep, ax_h):
        ax.axhline(-21, color="black", lw=0.5)
        ax.grid(alpha=0.3)
    ax_ep.legend(fontsize=8, loc="lower right")
    fig.suptitle("Pong from pixels: pgrl runs and Karpathy's gist on 2-core machines")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png", type=Path)
    parser.add_argument("runs", nargs="+", metavar="LABEL=METRICS_CSV")
    args = parser.parse_args()
    runs = {}
    for spec in args.runs:
        label, sep, path = spec.rpartition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=METRICS_CSV, got {spec!r}")
        runs[label] = read_run(path)
    plot(runs, args.png)
    print(table(runs))
    print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()

"""Compare backends: every (backend, seed) run of one config, in parallel, then a table and a plot.

    pgrl compare configs/cartpole.toml --seeds 0 1 2 --out runs/compare

Writes ``DIR/<backend>-seed<k>/`` (a normal run directory each), ``DIR/comparison.csv``,
``DIR/comparison.md`` (also printed) and ``DIR/curves.png``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from pgrl.config import ConfigError, load_config
from pgrl.executor import Trial, check_executor, run_trials
from pgrl.rundir import (
    check_out_dir,
    os_error_text,
    read_metrics,
    write_atomic,
    write_csv_atomic,
    write_text_atomic,
)

RUN_COLUMNS = [
    "backend",
    "seed",
    "status",
    "episodes",
    "solved",
    "solved_episode",
    "seconds_to_solve",
    "wall_time",
    "final_running_return",
    "mean100",
    "steps_per_second",
    "first_diff_episode",
    "max_weight_diff",
    "error",
]


def compare(
    config_path: str,
    backends=("numpy", "tensorflow"),
    seeds=(0, 1, 2),
    out: str | Path = "runs/compare",
    workers: int | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    executor: str = "local",
    address: str | None = None,
) -> list[dict]:
    """Train every (backend, seed) pair in parallel; write and return the per-run table.

    Args:
        config_path: TOML config shared by all runs (validated before anything starts).
        backends, seeds: the grid; each run goes to ``out/<backend>-seed<k>``.
        workers: parallel processes (default: one per core) of the local executor.
        overrides: ``section.key=value`` strings applied to every run.
        executor: "local" (processes on this machine) or "ray" (Ray Tune trials on the cluster
            at ``address``, else ``RAY_ADDRESS``, else a new local Ray instance).

    Returns:
        one dict per run with the columns of ``comparison.csv``.
    """
    overrides = list(overrides or [])
    out = check_out_dir(out)
    cfg = load_config(config_path, overrides)  # a config mistake stops us before any run
    check_executor(executor, address)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {os_error_text(out, e)}") from None
    trials = [Trial(f"{b}-seed{s}", b, s, tuple(overrides)) for s in seeds for b in backends]
    results = run_trials(
        str(config_path),
        trials,
        out,
        cfg.train.episodes,
        executor=executor,
        workers=workers,
        address=address,
        progress=progress,
        desc=f"compare {len(trials)} runs",
    )
    rows = [_run_row(out, t.backend, t.seed, results[t.name]) for t in trials]
    add_divergence(out, rows, backends, seeds)
    try:
        write_reports(out, rows, cfg, config_path, backends, seeds)
    except OSError as e:
        raise ConfigError(
            f"--out {os_error_text(out, e)}; the reports were not all written, the runs are "
            "complete in its <backend>-seed<k> directories"
        ) from None
    return rows


def _read_curve(run_dir: Path) -> dict[str, np.ndarray]:
    return read_metrics(run_dir / "metrics.csv")


def _run_row(out: Path, backend: str, seed: int, result: dict) -> dict:
    row = dict.fromkeys(RUN_COLUMNS, "")
    row.update(backend=backend, seed=seed, status=result["status"])
    if result["status"] != "ok":
        row["error"] = result["error"]
        return row
    curve = _read_curve(out / f"{backend}-seed{seed}")
    solved = result["solved_episode"]
    row.update(
        episodes=result["episodes"],
        solved=result["solved"],
        solved_episode=solved if solved is not None else "",
        seconds_to_solve=round(float(curve["wall_time"][solved - 1]), 2) if solved else "",
        wall_time=result["wall_time"],
        final_running_return=round(result["final_running_return"], 2),
        mean100=round(result["mean100"], 2),
        steps_per_second=result["steps_per_second"],
    )
    return row


def add_divergence(out: Path, rows: list[dict], backends, seeds) -> None:
    """Per seed: first episode whose return differs across backends, and the final weight gap."""
    from pgrl.checkpoint import load_checkpoint

    if len(backends) < 2:
        return
    by_key = {(r["backend"], r["seed"]): r for r in rows}
    for seed in seeds:
        ok = [b for b in backends if by_key[b, seed]["status"] == "ok"]
        if len(ok) < 2:
            continue
        curves = {b: _read_curve(out / f"{b}-seed{seed}")["return"] for b in ok}
        ref = curves[ok[0]]
        first = None
        for b in ok[1:]:
            n = min(len(ref), len(curves[b]))
            diff = np.flatnonzero(ref[:n] != curves[b][:n])
            if diff.size:
                first = int(diff[0]) + 1 if first is None else min(first, int(diff[0]) + 1)
            elif len(ref) != len(curves[b]) and first is None:
                first = n + 1
        weights = {
            b: load_checkpoint(out / f"{b}-seed{seed}" / "checkpoint.npz")["weights"] for b in ok
        }
        gap = max(
            float(np.max(np.abs(weights[b][k] - weights[ok[0]][k])))
            for b in ok[1:]
            for k in weights[ok[0]]
        )
        for b in ok:
            by_key[b, seed]["first_diff_episode"] = (
                "identical throughout" if first is None else first
            )
            by_key[b, seed]["max_weight_diff"] = f"{gap:.3g}"


def summarize(rows: list[dict], backends) -> list[dict]:
    """Per backend: runs, solved, median episodes and seconds to solve, means of the rest."""
    table = []
    for b in backends:
        ok = [r for r in rows if r["backend"] == b and r["status"] == "ok"]
        solved = [r for r in ok if r["solved"]]
        table.append(
            {
                "backend": b,
                "runs": sum(r["backend"] == b for r in rows),
                "failed": sum(r["backend"] == b and r["status"] != "ok" for r in rows),
                "solved": len(solved),
                "median_episodes_to_solve": _median([r["solved_episode"] for r in solved]),
                "median_seconds_to_solve": _median([r["seconds_to_solve"] for r in solved]),
                "mean_final_running_return": _mean([r["final_running_return"] for r in ok]),
                "mean_mean100": _mean([r["mean100"] for r in ok]),
                "mean_steps_per_second": _mean([r["steps_per_second"] for r in ok], 0),
            }
        )
    return table


def _median(xs):
    return round(float(np.median(xs)), 2) if xs else ""


def _mean(xs, digits=2):
    return round(float(np.mean(xs)), digits) if xs else ""


def _markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def write_reports(out: Path, rows, cfg, config_path, backends, seeds) -> None:
    """comparison.csv, comparison.md (also printed), curves.png and comparison.json."""
    write_csv_atomic(out / "comparison.csv", RUN_COLUMNS, rows)
    summary = summarize(rows, backends)
    md = [
        f"# Backend comparison: `{config_path}`",
        "",
        f"{cfg.env.id}, seeds {', '.join(map(str, seeds))}, episode budget "
        f"{cfg.train.episodes}, solved at mean100 >= {cfg.train.solved_mean100}.",
        "",
        "## Per backend",
        "",
        _markdown(summary, list(summary[0])),
        "",
        "## Per run",
        "",
        _markdown(rows, [c for c in RUN_COLUMNS if c != "error"]),
        "",
    ]
    errors = [r for r in rows if r["status"] != "ok"]
    if errors:
        md += (
            ["## Failed runs", ""]
            + [f"- {r['backend']} seed {r['seed']}: {r['error']}" for r in errors]
            + [""]
        )
    text = "\n".join(md)
    print(text)  # first: a full disk below loses none of it
    write_text_atomic(out / "comparison.md", text)
    ok = [(r["backend"], r["seed"]) for r in rows if r["status"] == "ok"]
    if ok:
        plot_curves(out, ok, backends, cfg.train.solved_mean100, f"{cfg.env.id}: {config_path}")
    write_text_atomic(
        out / "comparison.json",
        json.dumps({"runs": rows, "backends": summary}, indent=2, default=str),
    )


def plot_curves(out: Path, runs, backends, threshold, title: str) -> Path:
    """curves.png: running return vs episodes and vs seconds, mean over seeds, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"numpy": "tab:blue", "tensorflow": "tab:orange"}
    styles = {"numpy": "-", "tensorflow": "--"}  # identical curves stay visible on top
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for b in backends:
        curves = [_read_curve(out / f"{bb}-seed{s}") for bb, s in runs if bb == b]
        if not curves:
            continue
        color = colors.get(b)
        n = max(len(c["running_return"]) for c in curves)
        # a run that stopped (solved) is held at its last value
        ys = np.array(
            [np.pad(c["running_return"], (0, n - len(c["running_return"])), "edge") for c in curves]
        )
        x = np.arange(1, n + 1)
        label = f"{b} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        axes[0].plot(x, ys.mean(0), color=color, ls=styles.get(b, "-"), label=label)
        axes[0].fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.2)
        t_end = max(c["wall_time"][-1] for c in curves)
        grid = np.linspace(0, t_end, 400)
        yt = np.array(
            [
                np.interp(
                    grid,
                    c["wall_time"],
                    c["running_return"],
                    left=np.nan,
                    right=c["running_return"][-1],
                )
                for c in curves
            ]
        )
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # before a seed's first episode
            axes[1].plot(grid, np.nanmean(yt, 0), color=color, ls=styles.get(b, "-"), label=label)
            axes[1].fill_between(grid, np.nanmin(yt, 0), np.nanmax(yt, 0), color=color, alpha=0.2)
    for ax, xlabel in zip(axes, ("episode", "wall-clock seconds"), strict=True):
        if threshold is not None:
            label = f"solved: mean100 >= {threshold:g}"
            ax.axhline(threshold, color="gray", ls="--", lw=1, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("running return (0.99 old + 0.01 new)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_title("per episode")
    axes[1].set_title("per second of training")
    fig.suptitle(f"{title} — mean over seeds, band = min..max")
    path = out / "curves.png"
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path

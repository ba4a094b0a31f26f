"""Compare backends: a sweep (:mod:`pgrl.sweep`) of one grid point over backends and seeds, plus
where the backends part: the first episode whose return differs, and the gap of final weights.

    pgrl compare configs/cartpole.toml --seeds 0 1 2 --out runs/compare

Writes ``DIR/<backend>-seed<k>/`` (a normal run directory each), ``DIR/comparison.csv``,
``DIR/comparison.md`` (also printed), ``DIR/curves.png`` and ``DIR/comparison.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pgrl.atomic import write_atomic
from pgrl.build import check_env_id
from pgrl.checkpoint import load_checkpoint
from pgrl.config import load_config
from pgrl.executor import Executor
from pgrl.rundir import check_out_dir, out_error, read_metrics
from pgrl.sweep import Report, make_trials, run_trials, summarize, write_reports

RUN_COLUMNS = (
    "backend seed status episodes solved solved_episode seconds_to_solve wall_time "
    "final_running_return mean100 steps_per_second first_diff_episode max_weight_diff error"
).split()
# the table per backend: (column, row column, over the "ok" or the "solved" runs, f, decimals)
STATS = [
    ("median_episodes_to_solve", "solved_episode", "solved", np.median, 2),
    ("median_seconds_to_solve", "seconds_to_solve", "solved", np.median, 2),
    ("mean_final_running_return", "final_running_return", "ok", np.mean, 2),
    ("mean_mean100", "mean100", "ok", np.mean, 2),
    ("mean_steps_per_second", "steps_per_second", "ok", np.mean, 0),
]
REPORT = Report(
    ("comparison.csv", None, "comparison.md", "curves.png"),
    ("Backend comparison", "Per backend", "Per run", "Failed runs"),
    "- {backend} seed {seed}: {error}",
    RUN_COLUMNS,
    per_second=True,
)


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
    out = check_out_dir(out, "comparison")
    cfg = load_config(config_path, overrides)  # a config mistake stops us before any run
    check_env_id(cfg)
    where = Executor(executor, workers, address)
    where.check()
    trials = make_trials([], seeds, backends, overrides, config_path, point_names=False)
    desc = f"compare {len(trials)} runs"
    job = where.job(str(config_path), trials, out, cfg.train.episodes, desc, progress)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise out_error(out, e) from None
    rows = run_trials(job, where)
    add_divergence(out, rows, backends, seeds)
    table = summarize(rows, STATS, _leading_columns)
    intro = (
        f"{cfg.env.id}, seeds {', '.join(map(str, seeds))}, episode budget "
        f"{cfg.train.episodes}, solved at mean100 >= {cfg.train.solved_mean100}."
    )
    try:
        write_reports(out, REPORT, rows, table, trials, intro, config_path, cfg)
        rows = [{c: r[c] for c in RUN_COLUMNS} for r in rows]
        report = {"runs": rows, "backends": table}
        write_atomic(out / "comparison.json", json.dumps(report, indent=2, default=str))
    except OSError as e:
        tail = "; the reports were not all written, the runs are complete in its <backend>-seed<k>"
        raise out_error(out, e, f"{tail} directories") from None
    return rows


def _leading_columns(point: str, backend: str, runs: int, failed: int, solved: int) -> dict:
    return {"backend": backend, "runs": runs, "failed": failed, "solved": solved}


def add_divergence(out: Path, rows: list[dict], backends, seeds) -> None:
    """Per seed, into each backend's row: ``first_diff_episode`` (the first episode whose return
    differs across backends) and ``max_weight_diff`` (of their final weights), "" unless two
    backends or more finished."""
    for r in rows:
        r.setdefault("first_diff_episode", "")
        r.setdefault("max_weight_diff", "")
    by_key = {(r["backend"], r["seed"]): r for r in rows}
    for seed in seeds:
        ok = [b for b in backends if by_key[b, seed]["status"] == "ok"]
        if len(ok) < 2:
            continue
        runs = [out / f"{b}-seed{seed}" for b in ok]
        returns = [read_metrics(run / "metrics.csv")["return"] for run in runs]
        firsts = [d for r in returns[1:] if (d := _first_difference(returns[0], r)) is not None]
        weights = [load_checkpoint(run / "checkpoint.npz")["weights"] for run in runs]
        gap = max(float(np.max(np.abs(w[k] - weights[0][k]))) for w in weights[1:] for k in w)
        for b in ok:
            by_key[b, seed].update(
                first_diff_episode=min(firsts) if firsts else "identical throughout",
                max_weight_diff=f"{gap:.3g}",
            )


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first episode (from 1) where returns ``a`` and ``b`` differ or only one goes on."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    if diff.size:
        return int(diff[0]) + 1
    return n + 1 if len(a) != len(b) else None

"""Hyperparameter sweeps: every grid point x seed x backend of one config, then tables and a plot.

    pgrl sweep cartpole --grid optimizer.learning_rate=3e-3,1e-2 --seeds 0 1 2 --out runs/sweep

Each trial is a normal run directory ``DIR/p<i>-<backend>-seed<k>/``. Then ``DIR/trials.csv``
(one row per trial, with the node it ran on), ``DIR/sweep.csv`` and ``DIR/sweep.md`` (per grid
point and backend: solved seeds, mean/min/max of episodes and seconds to solve and of the final
running return), ``DIR/sweep.png`` (curves per grid point, band over seeds) and ``DIR/best.toml``
(the best point's config, ready for ``pgrl train``). ``DIR/sweep.json`` records the sweep so
that ``--resume`` continues it.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np

from pgrl.config import ConfigError, _cut, config_path, load_config, parse_override
from pgrl.executor import Trial, check_executor, run_trials
from pgrl.rundir import (
    check_out_dir,
    os_error_text,
    read_metrics,
    write_atomic,
    write_csv_atomic,
    write_text_atomic,
)

TRIAL_COLUMNS = [
    "trial",
    "point",
    "backend",
    "seed",
    "status",
    "node",
    "resumed_from",
    "episodes",
    "solved",
    "solved_episode",
    "seconds_to_solve",
    "wall_time",
    "final_running_return",
    "error",
]
# keys a grid may not hold: the sweep's own axes
_AXES = {"train.seed": "--seeds", "policy.backend": "--backend"}


def split_values(raw: str) -> list[str]:
    """``"1e-3,[16],[32,32]"`` -> ``["1e-3", "[16]", "[32,32]"]``: commas inside brackets or
    quotes belong to a value."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(raw):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(raw[start:i].strip())
            start = i + 1
    values.append(raw[start:].strip())
    return values


def parse_grid(config: str, texts: list[str], overrides: list[str]) -> list[tuple[str, list[str]]]:
    """``--grid key=v1,v2`` strings -> ``[(key, [raw values])]``, each value checked by loading
    the config with it (one-line error naming the key and the value)."""
    grid = []
    for text in texts:
        if "=" not in text:
            raise ConfigError(f"--grid {_cut(text)}: expected section.key=v1,v2,...")
        key, raw = (part.strip() for part in text.split("=", 1))
        if key in _AXES:
            raise ConfigError(f"--grid {key}: use {_AXES[key]} for this axis")
        if key in (k for k, _ in grid):
            raise ConfigError(f"--grid {key}: given twice")
        values = split_values(raw)
        if any(v == "" for v in values):
            raise ConfigError(f"--grid {_cut(text)}: an empty value")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {_cut(text)}: a value is listed twice")
        for v in values:
            parse_override(f"{key}={v}")
            try:
                load_config(config, [*overrides, f"{key}={v}"])
            except ConfigError as e:
                raise ConfigError(f"--grid {key}={_cut(v)[1:-1]}: {e}") from None
        grid.append((key, values))
    return grid


def make_trials(grid, seeds, backends, overrides, config: str) -> list[Trial]:
    """Every grid point (``p0``, ``p1``, ... in the order of itertools.product) x seed x backend;
    each point's combination is checked as a whole."""
    keys = [k for k, _ in grid]
    trials = []
    for i, values in enumerate(itertools.product(*(v for _, v in grid))):
        point = [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        cfg = load_config(config, [*overrides, *point])  # a combination may be invalid
        labels = {k: _value(cfg, k) for k in keys}
        for seed in seeds:
            for b in backends:
                trials.append(
                    Trial(f"p{i}-{b}-seed{seed}", b, seed, (*overrides, *point), False, i, labels)
                )
    return trials


def _value(cfg, key: str):
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


def sweep(
    config: str,
    grid: list[str],
    seeds=(0,),
    backends=("numpy",),
    out: str | Path = "runs/sweep",
    overrides: list[str] | None = None,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    storage: str | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Run the sweep; write and return the per-trial rows (see the module docstring).

    Args:
        config: TOML file or shipped config name shared by every trial.
        grid: ``section.key=v1,v2,...`` strings (values as in ``--set``); none: one point.
        seeds, backends: the other axes of the grid.
        executor: "local" (``workers`` processes, default one per core) or "ray" (Ray Tune on
            the cluster at ``address``, else ``RAY_ADDRESS``, else a new local Ray instance).
        storage: with "ray", a path every node sees or a cloud URI for Tune's checkpoints.
        scheduler: None (every trial runs its budget) or "asha" (Ray Tune's ASHA stops trials
            whose running return lags; ray executor only).
        resume: continue the sweep in ``out``: finished trials are kept, the others continue
            from their checkpoints. ``force``: start afresh in an ``out`` that holds a sweep.
    """
    overrides = list(overrides or [])
    out = check_out_dir(out)
    if scheduler is not None and executor != "ray":
        raise ConfigError(f"--scheduler {scheduler}: needs --executor ray (Ray Tune's schedulers)")
    if storage is not None and executor != "ray":
        raise ConfigError("--storage: needs --executor ray (it is where Ray Tune checkpoints)")
    cfg = load_config(config, overrides)
    check_executor(executor, address)
    parsed = parse_grid(config, grid, overrides)
    trials = make_trials(parsed, seeds, backends, overrides, config)
    spec = {
        "config": config_path(config).read_text(),
        "grid": parsed,
        "seeds": list(seeds),
        "backends": list(backends),
        "overrides": overrides,
        "scheduler": scheduler,
    }
    results = _prepare(out, spec, trials, resume, force)
    todo = [t for t in trials if t.name not in results]
    todo = [
        Trial(**{**t.__dict__, "resume": (out / t.name / "checkpoint.npz").is_file() and resume})
        for t in todo
    ]
    if todo:
        results.update(
            run_trials(
                str(config),
                todo,
                out,
                cfg.train.episodes,
                executor=executor,
                workers=workers,
                address=address,
                storage=storage,
                scheduler=scheduler,
                progress=progress,
                desc=f"sweep {len(trials)} trials",
            )
        )
    rows = [_trial_row(out, t, results[t.name]) for t in trials]
    try:
        write_reports(out, rows, trials, parsed, config, cfg)
    except OSError as e:
        raise ConfigError(
            f"--out {os_error_text(out, e)}; the reports were not all written, the trials are "
            "complete: make room, then --resume writes them"
        ) from None
    return rows


def _prepare(out: Path, spec: dict, trials: list[Trial], resume: bool, force: bool) -> dict:
    """Check ``out`` and record the sweep; with ``resume``, the results of finished trials."""
    record = out / "sweep.json"
    if record.is_file() and not (resume or force):
        raise ConfigError(
            f"--out {out}: holds a sweep; --resume continues it, --force starts afresh"
        )
    if resume and not record.is_file():
        raise ConfigError(f"--resume: {out} holds no sweep (no sweep.json)")
    if resume:
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--resume: {record} is unreadable ({e})") from None
        changed = [k for k in spec if json.dumps(old.get(k)) != json.dumps(spec[k])]
        if changed:
            raise ConfigError(
                f"--resume: the sweep in {out} was started with other {', '.join(changed)}; "
                "resume it with the same arguments, or --force to start afresh"
            )
    elif force and record.is_file():
        for name in json.loads(record.read_text()).get("trials", []):
            shutil.rmtree(out / Path(name).name, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            record, json.dumps({**spec, "trials": [t.name for t in trials]}, indent=1)
        )
    except OSError as e:
        raise ConfigError(f"--out {os_error_text(out, e)}") from None
    done = {}
    for t in trials if resume else ():
        summary = out / t.name / "summary.json"
        try:
            s = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        if s.get("stopped_by") not in (None, "interrupted"):
            done[t.name] = {"status": "ok", **s}
    return done


def _trial_row(out: Path, t: Trial, result: dict) -> dict:
    row = dict.fromkeys(TRIAL_COLUMNS, "")
    row.update(trial=t.name, point=f"p{t.point}", backend=t.backend, seed=t.seed)
    row.update(status=result["status"], node=result.get("node", ""), error=result.get("error", ""))
    row["resumed_from"] = result.get("resumed_from", "")
    if result["status"] == "stopped":  # by the scheduler: how far it got
        row.update(episodes=result["episodes"], final_running_return=result["final_running_return"])
    if result["status"] != "ok":
        return row
    solved = result["solved_episode"]
    if solved:
        curve = read_metrics(out / t.name / "metrics.csv")
        row["seconds_to_solve"] = round(float(curve["wall_time"][solved - 1]), 2)
    row.update(
        episodes=result["episodes"],
        solved=result["solved"],
        solved_episode=solved if solved is not None else "",
        wall_time=result["wall_time"],
        final_running_return=round(result["final_running_return"], 2),
    )
    return row


def summarize(rows: list[dict], trials: list[Trial]) -> list[dict]:
    """Per grid point and backend: seeds solved, and mean/min/max over seeds of episodes and
    seconds to solve (over the seeds that solved) and of the final running return."""
    labels = {f"p{t.point}": t.labels for t in trials}
    table = []
    for (point, backend), group in itertools.groupby(
        sorted(rows, key=lambda r: (int(r["point"][1:]), r["backend"])),
        key=lambda r: (r["point"], r["backend"]),
    ):
        group = list(group)
        ok = [r for r in group if r["status"] == "ok"]
        solved = [r for r in ok if r["solved"]]
        entry = {"point": point, **{k: _show(v) for k, v in labels[point].items()}}
        entry.update(backend=backend, trials=len(group), failed=len(group) - len(ok))
        entry["solved"] = f"{len(solved)}/{len(group)}"
        for name, column, runs in (
            ("episodes_to_solve", "solved_episode", solved),
            ("seconds_to_solve", "seconds_to_solve", solved),
            ("final_running_return", "final_running_return", ok),
        ):
            xs = [float(r[column]) for r in runs]
            for stat, f in (("mean", np.mean), ("min", np.min), ("max", np.max)):
                entry[f"{name}_{stat}"] = round(float(f(xs)), 2) if xs else ""
        table.append(entry)
    return table


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def best_point(table: list[dict]) -> dict | None:
    """The point with the most seeds solved, then the fewest episodes to solve, then the
    highest final running return (all backends of a point count together)."""

    def key(e):
        done, total = map(int, e["solved"].split("/"))
        episodes = e["episodes_to_solve_mean"]
        final = e["final_running_return_mean"]
        return (
            -done / total,
            episodes if episodes != "" else math.inf,
            -final if final != "" else math.inf,
        )

    ranked = sorted((e for e in table if e["final_running_return_mean"] != ""), key=key)
    return ranked[0] if ranked else None


def write_reports(out: Path, rows, trials, grid, config: str, cfg) -> None:
    """trials.csv, sweep.csv, sweep.md (also printed), sweep.png and best.toml."""
    write_csv_atomic(out / "trials.csv", TRIAL_COLUMNS, rows)
    table = summarize(rows, trials)
    write_csv_atomic(out / "sweep.csv", list(table[0]), table)
    best = best_point(table)
    keys = [k for k, _ in grid]
    md = [
        f"# Sweep: `{config}`",
        "",
        f"{cfg.env.id}; grid {', '.join(keys) or '(none)'}; {len(rows)} trials; episode "
        f"budget {cfg.train.episodes}; solved at mean100 >= {cfg.train.solved_mean100}.",
        "",
        "## Per grid point",
        "",
        _markdown(table, list(table[0])),
        "",
    ]
    if best is not None:
        point = next(t for t in trials if f"p{t.point}" == best["point"])
        best_cfg = point.config(config)
        best_cfg.log.progress = cfg.log.progress
        best_cfg.train.seed = cfg.train.seed
        header = (
            f"# The best point of the sweep in {out}: {best['point']} "
            f"({', '.join(f'{k} = {_show(v)}' for k, v in point.labels.items()) or 'no grid'}),"
            f" solved {best['solved']} seeds.\n# pgrl train {out / 'best.toml'}\n\n"
        )
        write_text_atomic(out / "best.toml", header + best_cfg.to_toml())
        md += [f"Best: **{best['point']}** ({best['backend']}), written to `best.toml`.", ""]
    md += ["## Per trial", "", _markdown(rows, [c for c in TRIAL_COLUMNS if c != "error"]), ""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        md += ["## Trials that did not finish", ""]
        md += [f"- {r['trial']}: {r['error']}" for r in failed] + [""]
    text = "\n".join(md)
    print(text)  # first: a full disk below loses none of it
    write_text_atomic(out / "sweep.md", text)
    plot_sweep(out, rows, trials, cfg.train.solved_mean100, f"{cfg.env.id}: {config}")


def _markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_sweep(out: Path, rows, trials, threshold, title: str) -> Path | None:
    """sweep.png: running return per episode, per grid point and backend: mean over seeds, band
    min..max (a run that stopped is held at its last value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_trial = {t.name: t for t in trials}
    curves: dict[tuple[int, str], list[np.ndarray]] = {}
    for r in rows:
        path = out / r["trial"] / "metrics.csv"
        if r["status"] in ("ok", "stopped") and path.is_file():
            t = by_trial[r["trial"]]
            curve = read_metrics(path)["running_return"]
            if len(curve):
                curves.setdefault((t.point, t.backend), []).append(curve)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    colors = plt.get_cmap("tab10")
    for (point, backend), ys in sorted(curves.items()):
        n = max(len(y) for y in ys)
        ys = np.array([np.pad(y, (0, n - len(y)), "edge") for y in ys])
        x = np.arange(1, n + 1)
        labels = next(t.labels for t in trials if t.point == point)
        name = ", ".join(f"{k.split('.')[-1]}={_show(v)}" for k, v in labels.items())
        style = "-" if backend == "numpy" else "--"
        color = colors(point % 10)
        label = f"p{point} {name} ({backend}, {len(ys)} seeds)"
        ax.plot(x, ys.mean(0), color=color, ls=style, label=label)
        ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.15)
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls=":", lw=1, label=f"solved: mean100 >= {threshold:g}")
    ax.set_xlabel("episode")
    ax.set_ylabel("running return (0.99 old + 0.01 new)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"{title}: mean over seeds, band = min..max")
    path = out / "sweep.png"
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path

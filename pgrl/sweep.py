"""Sweeps: every grid point x seed x backend of one config, then tables and a plot.

    pgrl sweep cartpole --grid optimizer.learning_rate=3e-3,1e-2 --seeds 0 1 2 --out runs/sweep

Each trial is a normal run directory ``DIR/p<i>-<backend>-seed<k>/``. Then ``DIR/trials.csv``
(one row per trial, with the node it ran on), ``DIR/sweep.csv`` and ``DIR/sweep.md`` (per grid
point and backend: solved seeds, mean/min/max of episodes and seconds to solve and of the final
running return), ``DIR/sweep.png`` (curves per grid point, band over seeds) and ``DIR/best.toml``
(the best point's config, ready for ``pgrl train``). ``DIR/sweep.json`` records the sweep so
that ``--resume`` continues it. The trials, rows, tables and plot serve :mod:`pgrl.compare` too.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgrl.atomic import write_atomic
from pgrl.build import check_env_id
from pgrl.config import ConfigError, _cut, config_path, load_config, parse_override
from pgrl.executor import Executor, Job, Trial, run_trials_local
from pgrl.rundir import check_out_dir, csv_text, out_error, read_metrics, remove_run
from pgrl.validate import BACKENDS

# a trial's row; trials.csv shows TRIAL_COLUMNS, comparison.csv (pgrl.compare) its own
ROW_COLUMNS = (
    "trial point backend seed status node resumed_from episodes solved solved_episode "
    "seconds_to_solve wall_time final_running_return mean100 steps_per_second error"
).split()
TRIAL_COLUMNS = [c for c in ROW_COLUMNS if c not in ("mean100", "steps_per_second")]
# sweep.csv's statistics: (column, row column, over the "ok" or the "solved" trials, f, decimals)
SWEEP_STATS = [
    (f"{name}_{stat}", column, over, f, 2)
    for name, column, over in (
        ("episodes_to_solve", "solved_episode", "solved"),
        ("seconds_to_solve", "seconds_to_solve", "solved"),
        ("final_running_return", "final_running_return", "ok"),
    )
    for stat, f in (("mean", np.mean), ("min", np.min), ("max", np.max))
]
# a trial's name, as make_trials gives it (sweep.json lists them; --force removes them)
_TRIAL_NAME = re.compile(r"p\d+-[a-z]+-seed\d+")
# keys a grid may not hold: the sweep's own axes
_AXES = {"train.seed": "--seeds", "policy.backend": "--backend"}


@dataclass(frozen=True)
class Report:
    """The files and headings of a sweep's (or a comparison's) reports."""

    files: tuple[str, str | None, str, str]  # CSV of the rows, CSV of the table (if any), md, png
    headings: tuple[str, str, str, str]  # title, of the table, of the rows, of the failures
    failed_line: str  # a failed trial's line in the markdown, formatted with its row
    columns: list[str]  # of the rows' CSV
    per_second: bool = False  # the plot's second panel: running return per second of training


SWEEP_REPORT = Report(
    ("trials.csv", "sweep.csv", "sweep.md", "sweep.png"),
    ("Sweep", "Per grid point", "Per trial", "Trials that did not finish"),
    "- {trial}: {error}",
    TRIAL_COLUMNS,
)


def split_values(raw: str) -> list[str]:
    """``"1e-3,[16],'a,b'"`` -> ``["1e-3", "[16]", "'a,b'"]``."""
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
    """``--grid key=v1,v2`` strings -> ``[(key, [raw values])]``, each value checked."""
    grid = []
    for text in texts:
        parse_override(text, flag="--grid")  # its form: section.key=...
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
            parse_override(f"{key}={v}", flag="--grid")
            try:
                load_config(config, [*overrides, f"{key}={v}"])
            except ConfigError as e:
                raise ConfigError(f"--grid {key}={_cut(v)[1:-1]}: {e}") from None
        grid.append((key, values))
    return grid


def make_trials(
    grid, seeds, backends, overrides, config: str, point_names: bool = True
) -> list[Trial]:
    """Every grid point x seed x backend, named ``p<i>-<backend>-seed<k>`` (without
    ``point_names``: ``<backend>-seed<k>``)."""
    keys = [k for k, _ in grid]
    trials = []
    for i, values in enumerate(itertools.product(*(v for _, v in grid))):
        point = [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        cfg = load_config(config, [*overrides, *point])  # a combination may be invalid
        check_env_id(cfg)
        labels = {k: functools.reduce(getattr, k.split("."), cfg) for k in keys}
        prefix = f"p{i}-" if point_names else ""
        trials += [
            Trial(f"{prefix}{b}-seed{seed}", b, seed, (*overrides, *point), False, i, labels)
            for seed in seeds
            for b in backends
        ]
    return trials


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
            from their checkpoints. ``force``: start afresh in an ``out`` that holds a sweep,
            removing the directories of its trials; a sweep.json that cannot be read is
            replaced, and every directory is left as it is (the trials it named are unknown).
    """
    overrides = list(overrides or [])
    out = check_out_dir(out, "sweep")
    where = Executor(executor, workers, address, storage, scheduler)
    cfg = load_config(config, overrides)
    where.check()
    parsed = parse_grid(config, grid, overrides)
    trials = make_trials(parsed, seeds, backends, overrides, config)
    desc = f"sweep {len(trials)} trials"
    job = where.job(str(config), trials, out, cfg.train.episodes, desc, progress)
    spec = {"config": config_path(config).read_text(), "grid": parsed, "seeds": list(seeds)}
    spec |= {"backends": list(backends), "overrides": overrides, "scheduler": scheduler}
    done = _prepare(out, spec, trials, resume, force)
    rows = run_trials(job, where, done, resume)
    try:
        _write_sweep_reports(out, rows, trials, parsed, config, cfg)
    except OSError as e:
        tail = "; the reports were not all written, the trials are complete: make room, then"
        raise out_error(out, e, f"{tail} --resume writes them") from None
    return rows


def run_trials(job: Job, executor: Executor, done: dict | None = None, resume=False) -> list[dict]:
    """Run the job's trials not in ``done`` (``{name: result}``); a row per trial. With ``resume``
    a trial with a checkpoint continues it, any other starts in an emptied ``out/<name>/``."""
    results = dict(done or {})
    todo = []
    for t in job.trials:
        if t.name not in results:
            resumes = resume and (job.out / t.name / "checkpoint.npz").is_file()
            if not resumes:
                remove_run(job.out / t.name)
            todo.append(dataclasses.replace(t, resume=resumes))
    if executor.name == "ray":
        from pgrl.ray_executor import run_trials_ray as run
    else:
        run = run_trials_local
    if todo:
        results.update(run(dataclasses.replace(job, trials=todo), executor))
    return [trial_row(job.out, t, results[t.name]) for t in job.trials]


def _prepare(out: Path, spec: dict, trials: list[Trial], resume: bool, force: bool) -> dict:
    """Check ``out`` and record the sweep; with ``resume``, the results of finished trials."""
    record = out / "sweep.json"
    if record.exists() and not record.is_file():
        raise ConfigError(
            f"--out {out}: its sweep.json is not a file; remove it or choose another directory"
        )
    if resume and not record.is_file():
        raise ConfigError(f"--resume: {out} holds no sweep (no sweep.json)")
    old = None
    if record.is_file():
        try:
            old = _read_record(record)
        except ValueError as e:
            if resume:
                raise ConfigError(f"--resume: {record} is unreadable ({e})") from None
            if not force:  # --force replaces it; which directories were its trials is unknown
                raise ConfigError(
                    f"--out {out}: holds a sweep whose sweep.json is unreadable ({e}); "
                    "--force starts afresh there"
                ) from None
        else:
            if not (resume or force):
                raise ConfigError(
                    f"--out {out}: holds a sweep; --resume continues it, --force starts afresh"
                )
    if resume:
        changed = [k for k in spec if json.dumps(old.get(k)) != json.dumps(spec[k])]
        if changed:
            raise ConfigError(
                f"--resume: the sweep in {out} was started with other {', '.join(changed)}; "
                "resume it with the same arguments, or --force to start afresh"
            )
    elif old is not None:  # --force
        for name in old["trials"]:
            shutil.rmtree(out / name, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(record, json.dumps({**spec, "trials": [t.name for t in trials]}, indent=1))
    except OSError as e:
        raise out_error(out, e) from None
    done = {}
    for t in trials if resume else ():
        summary = out / t.name / "summary.json"
        try:
            s = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and s.get("stopped_by") not in (None, "interrupted"):
            done[t.name] = {"status": "ok", **s}
    return done


def _read_record(record: Path) -> dict:
    """A sweep.json as :func:`_prepare` wrote it; ValueError saying why it is not one."""
    try:
        old = json.loads(record.read_bytes())
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    trials = old.get("trials") if isinstance(old, dict) else None
    if not isinstance(trials, list) or not all(
        isinstance(name, str) and _TRIAL_NAME.fullmatch(name) for name in trials
    ):
        raise ValueError("not a pgrl sweep record: no list of trial names")
    return old


def trial_row(out: Path, t: Trial, result: dict) -> dict:
    row = dict.fromkeys(ROW_COLUMNS, "")
    row.update(trial=t.name, point=f"p{t.point}", backend=t.backend, seed=t.seed)
    row.update({k: result.get(k, "") for k in ("node", "resumed_from", "error")})
    row["status"] = result["status"]
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
        final_running_return=_round(result["final_running_return"]),
        mean100=_round(result.get("mean100")),
        steps_per_second=result.get("steps_per_second", ""),
    )
    return row


def _round(x):
    return "" if x is None else round(x, 2)


def summarize(rows: list[dict], stats: list[tuple], head) -> list[dict]:
    """A table entry per grid point and backend: ``head(point, backend, trials, failed, solved)``,
    then per ``(name, column, over, f, decimals)`` of ``stats``, ``f`` of ``column`` over
    ``over`` ("ok" or "solved") trials."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["point"], r["backend"]), []).append(r)
    table = []
    for (point, backend), group in groups.items():
        runs = {"ok": [r for r in group if r["status"] == "ok"]}
        runs["solved"] = [r for r in runs["ok"] if r["solved"]]
        entry = head(point, backend, len(group), len(group) - len(runs["ok"]), len(runs["solved"]))
        for name, column, over, f, decimals in stats:
            xs = [float(r[column]) for r in runs[over]]
            entry[name] = round(float(f(xs)), decimals) if xs else ""
        table.append(entry)
    return table


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def best_point(table: list[dict]) -> dict | None:
    """The entry with the most seeds solved, then the fewest episodes to solve, then the highest
    final running return."""

    def key(e):
        done, total = map(int, e["solved"].split("/"))
        episodes, final = e["episodes_to_solve_mean"], e["final_running_return_mean"]
        return -done / total, math.inf if episodes == "" else episodes, -final

    ranked = sorted((e for e in table if e["final_running_return_mean"] != ""), key=key)
    return ranked[0] if ranked else None


def _write_sweep_reports(out: Path, rows, trials, grid, config: str, cfg) -> None:
    labels = {f"p{t.point}": {k: _show(v) for k, v in t.labels.items()} for t in trials}

    def head(point, backend, n, failed, solved):
        entry = {"point": point, **labels[point], "backend": backend, "trials": n}
        return {**entry, "failed": failed, "solved": f"{solved}/{n}"}

    ordered = sorted(rows, key=lambda r: (int(r["point"][1:]), r["backend"]))
    table = summarize(ordered, SWEEP_STATS, head)
    best = best_point(table)
    extra = []
    if best is not None:
        point = next(t for t in trials if f"p{t.point}" == best["point"])
        best_cfg = point.config(config)
        best_cfg.log.progress = cfg.log.progress
        best_cfg.train.seed = cfg.train.seed
        header = (
            f"# The best point of the sweep in {out}: {best['point']} "
            f"({', '.join(f'{k} = {v}' for k, v in labels[best['point']].items()) or 'no grid'}),"
            f" solved {best['solved']} seeds.\n# pgrl train {out / 'best.toml'}\n\n"
        )
        write_atomic(out / "best.toml", header + best_cfg.to_toml())
        extra = [f"Best: **{best['point']}** ({best['backend']}), written to `best.toml`.", ""]
    intro = (
        f"{cfg.env.id}; grid {', '.join(k for k, _ in grid) or '(none)'}; {len(rows)} trials; "
        f"episode budget {cfg.train.episodes}; solved at mean100 >= {cfg.train.solved_mean100}."
    )
    write_reports(out, SWEEP_REPORT, rows, table, trials, intro, config, cfg, extra)


def write_reports(out: Path, report: Report, rows, table, trials, intro, config, cfg, extra=()):
    """The rows' CSV, the table's, the markdown (``intro``, the table, ``extra`` lines, the rows,
    the failures; also printed) and the plot, as ``report`` names them."""
    rows_csv, table_csv, md_file, png = report.files
    title, per_group, per_row, failures = report.headings
    write_atomic(out / rows_csv, csv_text(report.columns, rows))
    if table_csv:
        write_atomic(out / table_csv, csv_text(list(table[0]), table))
    md = [f"# {title}: `{config}`", "", intro, "", f"## {per_group}", ""]
    md += [_markdown(table, list(table[0])), "", *extra, f"## {per_row}", ""]
    md += [_markdown(rows, [c for c in report.columns if c != "error"]), ""]
    failed = [report.failed_line.format(**r) for r in rows if r["status"] != "ok"]
    if failed:
        md += [f"## {failures}", "", *failed, ""]
    text = "\n".join(md)
    print(text)  # first: a full disk below loses none of it
    write_atomic(out / md_file, text)
    groups = curve_groups(out, rows, trials)
    if groups:
        title = f"{cfg.env.id}: {config}"
        plot_curves(out / png, groups, cfg.train.solved_mean100, title, report.per_second)


def _markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def curve_groups(out: Path, rows, trials) -> list[tuple[str, int, str, list[dict]]]:
    """``(label, color, line style, [metrics per seed])`` per grid point and backend of the trials
    that finished or were stopped; colors tell points apart (one point: backends)."""
    labels = {f"p{t.point}": t.labels for t in trials}
    curves: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        path = out / r["trial"] / "metrics.csv"
        if r["status"] in ("ok", "stopped") and path.is_file():
            metrics = read_metrics(path)
            if len(metrics["episode"]):
                curves.setdefault((r["point"], r["backend"]), []).append(metrics)
    groups = []
    for (point, backend), runs in curves.items():
        name = ", ".join(f"{k.split('.')[-1]}={_show(v)}" for k, v in labels[point].items())
        where = f"{point} {name} " if len(labels) > 1 else ""
        label = f"{where}{backend} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        color = int(point[1:]) if len(labels) > 1 else BACKENDS.index(backend)
        groups.append((label, color, "-" if backend == "numpy" else "--", runs))
    return groups


def plot_curves(path: Path, groups, threshold, title: str, per_second: bool = False) -> None:
    """A PNG of running return per episode (and per second) of the :func:`curve_groups`; a run
    that stopped early is held at its last value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = (12, 4.5) if per_second else (9, 5)
    fig, axes = plt.subplots(1, 1 + per_second, figsize=size, squeeze=False, layout="constrained")
    axes = axes[0]
    for label, color, style, runs in groups:
        line = {"color": plt.get_cmap("tab10")(color % 10), "ls": style, "label": label}
        returns = [m["running_return"] for m in runs]
        n = max(len(r) for r in returns)
        ys = [np.pad(r, (0, n - len(r)), "edge") for r in returns]
        _band(axes[0], np.arange(1, n + 1), np.array(ys), line)
        if per_second:
            times = [m["wall_time"] for m in runs]
            grid = np.linspace(0, max(t[-1] for t in times), 400)
            ys = [np.interp(grid, t, r, np.nan, r[-1]) for t, r in zip(times, returns, strict=True)]
            _band(axes[1], grid, np.array(ys), line)
    titles = [("episode", "per episode"), ("wall-clock seconds", "per second of training")]
    for ax, (xlabel, what) in zip(axes, titles, strict=False):
        if threshold is not None:
            label = f"solved: mean100 >= {threshold:g}"
            ax.axhline(threshold, color="gray", ls=":", lw=1, label=label)
        ax.set(xlabel=xlabel, ylabel="running return (0.99 old + 0.01 new)", title=what)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{title}: mean over seeds, band = min..max")
    try:
        write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)


def _band(ax, x, ys, line: dict) -> None:
    """The mean of ``ys`` (seeds, len(x)) as a line, in a band from min to max."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN before a seed's first episode
        ax.plot(x, np.nanmean(ys, 0), **line)
        ax.fill_between(x, np.nanmin(ys, 0), np.nanmax(ys, 0), color=line["color"], alpha=0.2)

"""Trials on a Ray cluster, through Ray Tune (imported only by ``--executor ray``).

Each trial is a Tune trial of one CPU, wherever Tune places it. It trains into a directory local
to its node and, at every pgrl checkpoint and at the end, sends its run files to
:class:`RunFiles`, an actor pinned to the driver's node that writes them under ``out/<name>/``:
results travel through Ray, never through a path that only looks shared. The same copy lets a
retried or resumed trial continue from its last checkpoint. With ``storage`` (a directory every
node sees, or a cloud URI), pgrl checkpoints are also Tune checkpoints there, which Tune hands
back to a trial it retries after a node or a worker died.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from pgrl.config import ConfigError
from pgrl.executor import Trial, check_address, run_trial

# summary.json last: a directory with a summary holds a finished run
_FILE_ORDER = ("metrics.csv", "updates.csv", "config.toml", "resumes.log", "checkpoint.npz")


def import_ray():
    """Ray and Ray Tune, or a one-line error saying how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'pgrl[ray]'") from None
    return ray, tune


def connect(address: str | None):
    """``ray.init`` at ``address`` (else ``RAY_ADDRESS``, else a new local Ray instance)."""
    ray, _ = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C stops the sweep at once
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(
        address=address,
        logging_level="ERROR",
        log_to_driver=False,
        include_dashboard=False,
        configure_logging=True,
        ignore_reinit_error=True,
    )
    return ray


def read_run_files(run_dir: Path) -> dict[str, bytes]:
    """The files of a run directory that describe the run: ``{name: bytes}``."""
    names = (*_FILE_ORDER, "summary.json")
    return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()}


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Each file atomically, summary.json last (metrics before checkpoint: extra rows past a
    checkpoint are cut on resume, missing ones would not be)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (*_FILE_ORDER, "summary.json"):
        if name in files:
            tmp = run_dir / f".{name}.tmp"
            tmp.write_bytes(files[name])
            os.replace(tmp, run_dir / name)


class RunFiles:
    """The driver's copy of every trial's run directory, ``out/<name>/`` (a Ray actor)."""

    def __init__(self, out: str):
        self.out = Path(out)

    def save(self, name: str, files: dict[str, bytes]) -> None:
        write_run_files(self.out / name, files)

    def load(self, name: str) -> dict[str, bytes]:
        return (
            read_run_files(self.out / name)
            if (self.out / name / "checkpoint.npz").is_file()
            else {}
        )


def _tune_trial(config: dict, config_path: str, run_files, use_storage: bool) -> None:
    """One Tune trial: restore (Tune checkpoint, else the driver's copy), train, report."""
    import ray
    from ray import tune

    trial = Trial(**config["trial"])
    node = ray.util.get_node_ip_address()
    run_dir = Path(tempfile.mkdtemp(prefix=f"pgrl-{trial.name}-"))
    try:
        checkpoint = tune.get_checkpoint() if use_storage else None
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                write_run_files(run_dir, read_run_files(Path(d)))
        else:
            write_run_files(run_dir, ray.get(run_files.load.remote(trial.name)))
        # a retry after a failure, or a sweep resumed: continue the run the driver holds
        trial = dataclasses.replace(trial, resume=(run_dir / "checkpoint.npz").is_file())
        resumed_from = _episodes_logged(run_dir) if trial.resume else ""

        last = {"running_return": float("nan"), "episodes": 0}

        def report(progress: dict, checkpointed: bool) -> None:
            last.update(progress)
            metrics = {**progress, "node": node}
            if not checkpointed:
                tune.report(metrics)
                return
            files = read_run_files(run_dir)
            ray.get(run_files.save.remote(trial.name, files))
            if not use_storage:
                tune.report(metrics)
                return
            with tempfile.TemporaryDirectory() as d:
                write_run_files(Path(d), files)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

        result = run_trial(config_path, trial, str(run_dir), report=report)
        ray.get(run_files.save.remote(trial.name, read_run_files(run_dir)))
        final = {**last, **result, "node": node, "resumed_from": resumed_from}
        tune.report({**final, "finished": True})
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _episodes_logged(run_dir: Path) -> int:
    with open(run_dir / "metrics.csv") as f:
        return max(0, sum(1 for _ in f) - 1)


class _ProgressBar:
    """A tqdm bar over trials for Tune's callbacks (a running trial counts as its share)."""

    def __init__(self, total: int, episodes: int, progress: bool, desc: str):
        from tqdm.auto import tqdm

        self.episodes = episodes
        self.share = {}
        self.bar = tqdm(
            total=total, unit="trial", desc=desc, dynamic_ncols=True, disable=not progress
        )
        self.bar.bar_format = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"

    def update(self, trial_id: str, share: float) -> None:
        self.share[trial_id] = min(1.0, share)
        self.bar.n = sum(self.share.values())
        self.bar.refresh()


def run_trials_ray(
    config_path, trials, out: Path, episodes, address, storage, scheduler, progress, desc
) -> dict[str, dict]:
    """:func:`pgrl.executor.run_trials` on Ray Tune: ``{trial.name: result}``."""
    ray = connect(address)
    _, tune = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    run_files = (
        ray.remote(num_cpus=0)(RunFiles)
        .options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        .remote(str(Path(out).resolve()))
    )
    bar = _ProgressBar(len(trials), episodes, progress, desc)

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            bar.update(
                trial.trial_id,
                1.0 if result.get("finished") else result.get("episodes", 0) / episodes,
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            bar.update(trial.trial_id, 1.0)

        def on_trial_error(self, iteration, trials, trial, **info):
            bar.update(trial.trial_id, 1.0)

    tune_config = tune.TuneConfig(metric="running_return", mode="max", reuse_actors=True)
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # a trial's time is its episodes; the first cut after an eighth of the budget. max_t
        # lies past the budget: a trial that reaches it finishes as pgrl says, not stopped
        tune_config.scheduler = ASHAScheduler(
            time_attr="episodes", max_t=episodes + 1, grace_period=max(1, episodes // 8)
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            _tune_trial,
            config_path=str(config_path),
            run_files=run_files,
            use_storage=bool(storage),
        ),
        {"cpu": 1},
    )
    space = {"trial": tune.grid_search([dataclasses.asdict(t) for t in trials])}
    run_config = tune.RunConfig(
        name="tune",
        storage_path=storage or str(Path(out).resolve() / ".tune"),
        failure_config=tune.FailureConfig(max_failures=1),  # retried once, from its checkpoint
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
        callbacks=[Progress()],
    )
    try:
        grid = tune.Tuner(
            trainable, param_space=space, tune_config=tune_config, run_config=run_config
        ).fit()
    finally:
        bar.bar.close()
    results = {}
    for r in grid:
        name = r.config["trial"]["name"]
        metrics = r.metrics or {}
        if r.error is not None:
            results[name] = {"status": "error", "error": f"failed twice: {_first_line(r.error)}"}
        elif metrics.get("finished"):
            results[name] = {k: v for k, v in metrics.items() if k in _RESULT_KEYS}
        else:  # stopped by the scheduler
            results[name] = {
                "status": "stopped",
                "error": f"stopped early by ASHA at episode {metrics.get('episodes', 0)}",
                "episodes": metrics.get("episodes", 0),
                "final_running_return": metrics.get("running_return", float("nan")),
            }
        results[name]["node"] = metrics.get("node", "")
        results[name]["resumed_from"] = metrics.get("resumed_from", "")
    return results


_RESULT_KEYS = (
    "status",
    "error",
    "backend",
    "seed",
    "env",
    "episodes",
    "steps",
    "env_steps",
    "updates",
    "wall_time",
    "steps_per_second",
    "solved",
    "solved_episode",
    "final_running_return",
    "mean100",
    "stopped_by",
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]

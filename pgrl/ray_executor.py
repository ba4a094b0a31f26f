"""Trials on a Ray cluster, through Ray Tune (imported only by ``--executor ray``).

Each trial is a Tune trial of one CPU, wherever Tune places it. It gets its config, and the
weights the config names, from the driver (a trial reads no file of the driver's by path), and
trains in a directory of its own on its node. At every pgrl checkpoint and at the end it sends
its run files to :class:`RunFiles`, an actor pinned to the driver's node that writes them under
``out/<name>/``: results travel through Ray, never through a path that only looks shared. The
same copy lets a retried or resumed trial continue from its last checkpoint. With ``storage`` (a
directory every node sees, or a cloud URI), pgrl checkpoints are also Tune checkpoints there,
which Tune hands back to a trial it retries after a node or a worker died.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pgrl.executor import Executor, Job, Trial, TrialsBar, run_trial
from pgrl.ray_connect import connect, import_ray
from pgrl.rundir import episodes_logged, read_run_files, write_run_files

# A node's trial directories, one per trial running there. A trial's process holds an flock on
# its directory, which the kernel drops when the process ends however it ends (SIGKILL too): a
# directory nobody locks is a killed trial's, removed by the next trial on the node and by the
# driver when the trials are done.
TRIALS_DIR = Path(tempfile.gettempdir()) / f"pgrl-trials-{os.getuid()}"
_HIDDEN_GRACE = 60.0  # seconds a directory may stay hidden (being made) before it counts as left

# what a finished trial's result holds (Tune adds its own keys to the last report)
_RESULT_KEYS = (
    "status error backend seed env episodes steps env_steps updates wall_time steps_per_second "
    "solved solved_episode final_running_return mean100 stopped_by"
).split()


class RunFiles:
    """The driver's copy of every trial's run directory, ``out/<name>/`` (a Ray actor)."""

    def __init__(self, out: str):
        self.out = Path(out)

    def save(self, name: str, files: dict[str, bytes]) -> None:
        write_run_files(self.out / name, files)

    def load(self, name: str) -> dict[str, bytes]:
        run_dir = self.out / name
        return read_run_files(run_dir) if (run_dir / "checkpoint.npz").is_file() else {}


@contextlib.contextmanager
def trial_directory(name: str) -> Iterator[Path]:
    """A new directory for one trial in :data:`TRIALS_DIR`, locked by this process from the
    start and removed at the end; first, the directories killed trials left there go."""
    TRIALS_DIR.mkdir(mode=0o700, exist_ok=True)
    remove_stale_trial_dirs()
    # made under a hidden name and locked before it is renamed: no cleaner sees it unlocked
    path = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=TRIALS_DIR))
    fd = os.open(path, os.O_RDONLY)
    remove = functools.partial(shutil.rmtree, path, ignore_errors=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        visible = path.with_name(path.name[1:])
        os.rename(path, visible)
        remove = functools.partial(shutil.rmtree, visible, ignore_errors=True)
        # SIGTERM ends a Ray worker through SystemExit: the interpreter exits (atexit runs) and
        # the trial's thread dies with it, never reaching the finally below
        atexit.register(remove)
        yield visible
    finally:
        atexit.unregister(remove)
        remove()
        os.close(fd)


def remove_stale_trial_dirs() -> list[str]:
    """Remove the trial directories in :data:`TRIALS_DIR` that no process holds (their trials
    were killed); returns their names."""
    try:
        entries = list(TRIALS_DIR.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        try:
            if entry.name.startswith(".") and time.time() - entry.stat().st_mtime < _HIDDEN_GRACE:
                continue  # being made
            fd = os.open(entry, os.O_RDONLY)
        except OSError:  # removed meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        except BlockingIOError:  # its trial is running
            pass
        finally:
            os.close(fd)
    return removed


def _tune_trial(config: dict, configs: dict, inits: dict, run_files, use_storage: bool) -> None:
    """One Tune trial: restore (Tune checkpoint, else the driver's copy), train, report."""
    import ray
    from ray import tune

    trial = Trial(**config["trial"])
    cfg = configs[trial.name]
    node = ray.util.get_node_ip_address()
    with trial_directory(trial.name) as tmp:
        run_dir = tmp / "run"
        init = ray.get(inits[cfg.train.init]) if cfg.train.init in inits else None
        checkpoint = tune.get_checkpoint() if use_storage else None
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                write_run_files(run_dir, read_run_files(Path(d)))
        else:
            write_run_files(run_dir, ray.get(run_files.load.remote(trial.name)))
        # a retry after a failure, or a sweep resumed: continue the run the driver holds
        trial = dataclasses.replace(trial, resume=(run_dir / "checkpoint.npz").is_file())
        resumed_from = episodes_logged(run_dir) if trial.resume else ""

        last = {"running_return": float("nan"), "episodes": 0}

        def report(progress: dict, checkpointed: bool) -> None:
            last.update(progress)
            metrics = {**progress, "node": node}
            if checkpointed:
                saved = read_run_files(run_dir)
                ray.get(run_files.save.remote(trial.name, saved))
            if not (checkpointed and use_storage):
                tune.report(metrics)
                return
            with tempfile.TemporaryDirectory() as d:
                write_run_files(Path(d), saved)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

        result = run_trial(cfg, trial, str(run_dir), report=report, init=init)
        ray.get(run_files.save.remote(trial.name, read_run_files(run_dir)))
        final = {**last, **result, "node": node, "resumed_from": resumed_from}
        tune.report({**final, "finished": True})


def run_trials_ray(job: Job, executor: Executor) -> dict[str, dict]:
    """Every trial of ``job`` as a Ray Tune trial: ``{name: result}``."""
    ray = connect(executor.address)
    _, tune = import_ray()
    bar, episodes = TrialsBar(job), job.episodes

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            done = episodes if result.get("finished") else result.get("episodes", 0)
            bar.update(trial.trial_id, done)

        def on_trial_complete(self, iteration, trials, trial, **info):
            bar.update(trial.trial_id, episodes)

        on_trial_error = on_trial_complete

    inits = {init: ray.put(weights) for init, weights in job.inits.items()}
    trainable = tune.with_resources(
        tune.with_parameters(
            _tune_trial,
            configs=job.configs,
            inits=inits,
            run_files=_run_files_actor(ray, job.out),
            use_storage=bool(executor.storage),
        ),
        {"cpu": 1},
    )
    run_config = tune.RunConfig(
        name="tune",
        storage_path=executor.storage or str(job.out.resolve() / ".tune"),
        failure_config=tune.FailureConfig(max_failures=1),  # retried once, from its checkpoint
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
        callbacks=[Progress()],
    )
    space = {"trial": tune.grid_search([dataclasses.asdict(t) for t in job.trials])}
    tune_config = _tune_config(tune, episodes, executor.scheduler)
    try:
        grid = tune.Tuner(
            trainable, param_space=space, tune_config=tune_config, run_config=run_config
        ).fit()
    finally:
        bar.bar.close()
    _remove_stale_trial_dirs_on_every_node(ray)
    return {r.config["trial"]["name"]: _result(r) for r in grid}


def _remove_stale_trial_dirs_on_every_node(ray, timeout: float = 30.0) -> None:
    """:func:`remove_stale_trial_dirs` on every alive node (a trial killed last on its node
    has no next trial there to remove its directory)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(remove_stale_trial_dirs)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
        for n in nodes
    ]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)


def _run_files_actor(ray, out: Path):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0)(RunFiles).options(scheduling_strategy=here)
    return actor.remote(str(Path(out).resolve()))


def _tune_config(tune, episodes: int, scheduler: str | None):
    tune_config = tune.TuneConfig(metric="running_return", mode="max", reuse_actors=True)
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # a trial's time is its episodes; the first cut after an eighth of the budget. max_t
        # lies past the budget: a trial that reaches it finishes as pgrl says, not stopped
        tune_config.scheduler = ASHAScheduler(
            time_attr="episodes", max_t=episodes + 1, grace_period=max(1, episodes // 8)
        )
    return tune_config


def _result(r) -> dict:
    """A trial's result from Tune's ``Result``: finished, failed twice or stopped by ASHA."""
    metrics = r.metrics or {}
    if r.error is not None:
        result = {"status": "error", "error": f"failed twice: {_first_line(r.error)}"}
    elif metrics.get("finished"):
        result = {k: v for k, v in metrics.items() if k in _RESULT_KEYS}
    else:
        result = {
            "status": "stopped",
            "error": f"stopped early by ASHA at episode {metrics.get('episodes', 0)}",
            "episodes": metrics.get("episodes", 0),
            "final_running_return": metrics.get("running_return", float("nan")),
        }
    return {**result, **{k: metrics.get(k, "") for k in ("node", "resumed_from")}}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]

"""Where many training runs execute: local processes (one per core) or a Ray cluster.

``pgrl compare`` and ``pgrl sweep`` describe their runs as :class:`Trial` s and hand them to
:func:`run_trials`; either way every trial's run directory ends up under ``out/<trial.name>/`` on
this machine, and every trial comes back as a result dict (``status`` "ok", "error" or
"stopped", plus the run's summary).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from pgrl.config import ConfigError, load_config
from pgrl.rundir import RUN_FILES

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Trial:
    """One training run: a config plus ``overrides``, with a backend and a seed.

    ``name`` is its run directory under the output directory; ``resume`` continues the run
    found there (the files of one that was stopped) instead of starting afresh.
    """

    name: str
    backend: str
    seed: int
    overrides: tuple[str, ...] = ()
    resume: bool = False
    point: int = 0  # the grid point it belongs to (sweeps)
    labels: dict = field(default_factory=dict, compare=False)  # {config key: value} of the point

    def config(self, config_path: str | Path):
        """The trial's config (progress bars off: the sweep has its own)."""
        return load_config(
            config_path,
            [*self.overrides, f"train.seed={self.seed}", f"policy.backend={self.backend}"]
            + ["log.progress=false"],
        )


def run_trial(config_path: str, trial: Trial, run_dir: str, report=None) -> dict:
    """Train one trial into ``run_dir``; errors of the run come back as data, never raised.

    ``report(progress, checkpointed)`` is called after every update (see
    :func:`pgrl.reinforce.train`).
    """
    from pgrl.reinforce import train

    try:
        summary = train(
            trial.config(config_path),
            out=run_dir,
            resume=trial.resume,
            overwrite=not trial.resume,
            report=report,
        )
        return {"status": "ok", **summary}
    except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
        last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        where = (
            ""
            if isinstance(e, ConfigError) or not last
            else f" at {Path(last[0].filename).name}:{last[0].lineno}"
        )
        return {"status": "error", "error": f"{type(e).__name__}: {e}{where}"}


def _run_in_worker(run, config_path: str, trial: Trial, run_dir: str) -> dict:
    """A local worker process runs ``run`` (:func:`run_trial`)."""
    resumed_from = _episodes_done(Path(run_dir)) if trial.resume else ""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: a checkpoint, then stop
    try:
        return {**run(config_path, trial, run_dir), "node": "local", "resumed_from": resumed_from}
    except KeyboardInterrupt:
        return {"status": "error", "error": "interrupted"}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ignore_interrupts() -> None:
    """A local worker between trials: Ctrl-C is the driver's to handle. The worker was started
    with SIGINT blocked (see :func:`_run_local`), so a Ctrl-C during its start-up waits here and
    is dropped, instead of ending its start-up with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def run_trials(
    config_path: str,
    trials: list[Trial],
    out: Path,
    episodes: int,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    storage: str | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    desc: str = "trials",
) -> dict[str, dict]:
    """Run every trial (``episodes``: each one's budget, for the progress bar).

    Returns ``{trial.name: result}``; a trial that is not resumed starts in an emptied
    ``out/<name>/``.
    """
    for t in trials:
        if not t.resume:
            _remove_run(out / t.name)
    if executor == "ray":
        from pgrl.ray_executor import run_trials_ray

        return run_trials_ray(
            config_path, trials, out, episodes, address, storage, scheduler, progress, desc
        )
    return _run_local(config_path, trials, out, episodes, workers, progress, desc)


def _remove_run(run_dir: Path) -> None:
    for name in (*RUN_FILES, "resumes.log"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def _episodes_done(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.csv") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def _run_local(config_path, trials, out: Path, episodes: int, workers, progress, desc) -> dict:
    """A pool of ``workers`` processes (default: one per core), with a tqdm bar over the trials
    (a running trial counts as the share of its episode budget in its metrics.csv)."""
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(trials), unit="trial", desc=desc, dynamic_ncols=True, disable=not progress)
    bar.bar_format = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"
    results = {}
    # spawn: TensorFlow does not survive fork, and each run starts from a clean interpreter
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_ignore_interrupts
    )
    try:
        queue, futures = list(trials), {}
        while queue or futures:
            # at most one trial per worker is submitted: after Ctrl-C no queued trial starts
            while queue and len(futures) < workers:
                t = queue.pop(0)
                args = (run_trial, config_path, t, str(out / t.name))
                # a worker process may start here: it inherits SIGINT blocked; the driver's
                # own Ctrl-C waits until the mask is restored, then interrupts as usual
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    futures[pool.submit(_run_in_worker, *args)] = t.name
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            for f in [f for f in futures if f.done()]:
                name = futures.pop(f)
                try:
                    results[name] = f.result()
                except Exception as e:  # the worker itself died (killed, out of memory, ...)
                    results[name] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            running = sum(min(1.0, _episodes_done(out / n) / episodes) for n in futures.values())
            bar.n = len(results) + running
            bar.refresh()
            if futures:
                time.sleep(0.25)
    finally:
        bar.close()
        # after Ctrl-C: trials not yet started never start; running ones (interrupted too, in
        # the same process group) end with a checkpoint
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def check_executor(executor: str, address: str | None) -> None:
    """Before anything starts: the executor exists, Ray is installed and its head answers."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        from pgrl.ray_executor import import_ray

        import_ray()
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            check_address(address)


def check_address(address: str, timeout: float = 5.0) -> None:
    """A one-line error, before Ray is started, when nothing listens at ``host:port``."""
    if address.startswith(("ray://", "auto")) or address == "local":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--address {address}: expected HOST:PORT of a Ray head, e.g. 10.0.0.1:6379"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(
            f"--address {address}: cannot reach a Ray head there ({e.strerror or e})"
        ) from None

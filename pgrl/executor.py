"""Where many training runs execute: local processes here, Ray in :mod:`pgrl.ray_executor`.

Either way the driver reads every trial's config (and, for Ray, the weights it names) and hands it
over, so a trial opens no file of the driver's by path; every trial's run directory ends up under
``out/<trial.name>/`` on this machine, and every trial comes back as a result dict (``status``
"ok", "error" or "stopped", plus the run's summary).
"""

from __future__ import annotations

import ctypes
import os
import signal
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from pgrl.config import Config, ConfigError, load_config
from pgrl.ray_connect import check_address, import_ray
from pgrl.rundir import episodes_logged

EXECUTORS = ("local", "ray")
PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent exits


@dataclass(frozen=True)
class Trial:
    """One training run, into ``out/<name>/``; ``resume`` continues the run found there."""

    name: str
    backend: str
    seed: int
    overrides: tuple[str, ...] = ()
    resume: bool = False
    point: int = 0  # the grid point it belongs to (sweeps)
    labels: dict = field(default_factory=dict, compare=False)  # {config key: value} of the point

    def config(self, config_path: str | Path):
        """The trial's config (progress bars off: the sweep has its own)."""
        own = [f"train.seed={self.seed}", f"policy.backend={self.backend}", "log.progress=false"]
        return load_config(config_path, [*self.overrides, *own])


def run_trial(cfg: Config, trial: Trial, run_dir: str, report=None, init=None) -> dict:
    """Train one trial (its config ``cfg``) into ``run_dir``; errors come back as data, never
    raised. ``report``, ``init``: as :func:`pgrl.reinforce.train` takes them."""
    from pgrl.reinforce import train

    try:
        summary = train(
            cfg,
            out=run_dir,
            resume=trial.resume,
            overwrite=not trial.resume,
            report=report,
            init=init,
        )
        return {"status": "ok", **summary}
    except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
        last = traceback.extract_tb(e.__traceback__)[-1:]
        where = "".join(f" at {Path(f.filename).name}:{f.lineno}" for f in last)
        error = f"{type(e).__name__}: {e}{'' if isinstance(e, ConfigError) else where}"
        return {"status": "error", "error": error}


def _run_in_worker(run, cfg: Config, trial: Trial, run_dir: str) -> dict:
    resumed_from = episodes_logged(Path(run_dir)) if trial.resume else ""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: a checkpoint, then stop
    try:
        return {**run(cfg, trial, run_dir), "node": "local", "resumed_from": resumed_from}
    except KeyboardInterrupt:
        return {"status": "error", "error": "interrupted"}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ignore_interrupts() -> None:
    """Between trials Ctrl-C is the driver's. The worker started with SIGINT blocked, so a Ctrl-C
    during its start-up is dropped here instead of ending it with a traceback. On Linux the
    worker also ends (SIGTERM) when the driver dies, killed or not, instead of training on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with(os.getppid())


def _die_with(driver: int) -> None:
    """SIGTERM this process when its parent exits (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: an orphan runs its trial to the end
        return
    if os.getppid() != driver:  # the driver died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class Executor:
    """Where trials run: ``--executor`` and its options (see :func:`pgrl.sweep.sweep`)."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None
    storage: str | None = None
    scheduler: str | None = None

    def check(self) -> None:
        """Before anything starts: the options fit the executor, Ray's head answers."""
        if self.name not in EXECUTORS:
            raise ConfigError(f"--executor {self.name!r}: expected one of {', '.join(EXECUTORS)}")
        if self.scheduler is not None and self.name != "ray":
            raise ConfigError(
                f"--scheduler {self.scheduler}: needs --executor ray (Ray Tune's schedulers)"
            )
        if self.storage is not None and self.name != "ray":
            raise ConfigError("--storage: needs --executor ray (it is where Ray Tune checkpoints)")
        if self.name == "ray":
            import_ray()
            address = self.address or os.environ.get("RAY_ADDRESS")
            if address:
                check_address(address)

    def job(
        self, config: str, trials: list[Trial], out: Path, episodes: int, desc: str, progress: bool
    ) -> Job:
        """The trials with their configs, read here from ``config`` (a file or a shipped name),
        and for Ray the weights the configs name: a Ray trial reads no file of this machine's."""
        configs = {t.name: t.config(config) for t in trials}
        inits = read_inits(configs) if self.name == "ray" else {}
        return Job(configs, trials, out, episodes, desc, progress, inits)


@dataclass(frozen=True)
class Job:
    """Trials as every executor takes them, each with its config (read by the driver);
    ``episodes``: each one's budget; ``inits``: for Ray, the weights the configs name (see
    :func:`read_inits`)."""

    configs: dict[str, Config]  # trial name -> its config
    trials: list[Trial]
    out: Path
    episodes: int
    desc: str = "trials"
    progress: bool = True
    inits: dict[str, dict] = field(default_factory=dict)


def read_inits(configs: dict[str, Config]) -> dict[str, dict]:
    """``{train.init: weights}`` of the configs, read here (a file, a run directory or a
    shipped name, as :func:`pgrl.checkpoint.read_init` reads them) for trials that cannot read
    the driver's files; the configs keep ``train.init`` as given."""
    from pgrl.checkpoint import read_init

    inits = {cfg.train.init for cfg in configs.values() if cfg.train.init is not None}
    return {init: read_init(init) for init in sorted(inits)}


class TrialsBar:
    """A tqdm bar over a job's trials; a running trial counts as the share of its budget done."""

    def __init__(self, job: Job):
        from tqdm.auto import tqdm

        self.episodes, self.share = job.episodes, {}
        self.bar = tqdm(
            total=len(job.trials),
            unit="trial",
            desc=job.desc,
            dynamic_ncols=True,
            disable=not job.progress,
        )
        self.bar.bar_format = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"

    def update(self, trial: str, episodes: float) -> None:
        self.share[trial] = min(1.0, episodes / self.episodes)
        self.bar.n = sum(self.share.values())
        self.bar.refresh()


def run_trials_local(job: Job, executor: Executor) -> dict[str, dict]:
    """Every trial of ``job`` in a pool of processes: ``{name: result}``."""
    workers = executor.workers or os.cpu_count() or 1
    bar = TrialsBar(job)
    results = {}
    # spawn: TensorFlow does not survive fork, and each run starts from a clean interpreter
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_ignore_interrupts
    )
    try:
        queue, futures = list(job.trials), {}
        while queue or futures:
            # at most one trial per worker is submitted: after Ctrl-C no queued trial starts
            while queue and len(futures) < workers:
                t = queue.pop(0)
                args = (run_trial, job.configs[t.name], t, str(job.out / t.name))
                # a worker process may start here: it inherits SIGINT blocked; the driver's
                # own Ctrl-C waits until the mask is restored, then interrupts as usual
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    futures[pool.submit(_run_in_worker, *args)] = t.name
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            done, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
            for f in done:
                name = futures.pop(f)
                try:
                    results[name] = f.result()
                except Exception as e:  # the worker itself died (killed, out of memory, ...)
                    results[name] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
                bar.update(name, job.episodes)
            for name in futures.values():
                bar.update(name, episodes_logged(job.out / name))
    finally:
        bar.bar.close()
        # after Ctrl-C: trials not yet started never start; running ones (interrupted too, in
        # the same process group) end with a checkpoint
        pool.shutdown(wait=True, cancel_futures=True)
    return results

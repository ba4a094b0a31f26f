"""A training run on disk: its directory, counters, CSVs, checkpoint and summary.

A run directory holds ``config.toml`` (the resolved config), ``metrics.csv`` (one row per
episode), ``updates.csv`` (one row per update), ``checkpoint.npz`` (see :mod:`pgrl.checkpoint`)
and ``summary.json``. Rows are appended and flushed as the run goes; on resume, rows past the
checkpoint (lost work) and torn rows (a crash mid-write) are dropped before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import shutil
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgrl.atomic import remove_temp_files, write_atomic
from pgrl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_policy,
    restore_value,
    save_checkpoint,
)
from pgrl.config import Config, ConfigError, _cut, from_dict

METRICS_HEADER = "episode steps wall_time return running_return mean100 length update".split()
UPDATES_HEADER = (
    "update episodes steps batch_steps loss grad_norm mean_prob entropy "
    "rollout_seconds update_seconds broadcast_seconds transfer_seconds "
    "value_loss explained_variance approx_kl clip_fraction epochs gradient_seconds"
).split()
# updates.csv columns a run without a value network or PPO (or of an older pgrl) leaves at NaN
OPTIONAL_COLUMNS = ("value_loss", "explained_variance", "approx_kl", "clip_fraction", "epochs")
# columns the rows of an older pgrl's runs lack
LATER_COLUMNS = (*OPTIONAL_COLUMNS, "gradient_seconds")


@dataclass
class RunState:
    """A run's counters: what a checkpoint stores besides weights, optimizer and RNG."""

    episodes: int = 0
    steps: int = 0  # recorded steps (the data of the batches)
    env_steps: int = 0  # all env steps, idle envs' included (for throughput)
    updates: int = 0
    wall_time: float = 0.0
    running_return: float | None = None
    solved_episode: int | None = None
    recent_returns: deque = field(default_factory=lambda: deque(maxlen=100))

    @property
    def mean100(self) -> float:
        """Mean return of the last 100 episodes (fewer at the start)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")

    def add_batch(
        self,
        batch,
        stats: dict,
        seconds: tuple[float, float, float, float, float],
        wall_time: float,
        solved_mean100: float | None,
    ) -> tuple[list[list], list]:
        """Count one update and its episodes; the rows they add to metrics.csv and updates.csv.

        The running return is Karpathy's ``0.99 * old + 0.01 * return``, from the first return.
        """
        self.updates += 1
        self.env_steps += batch.env_steps
        self.wall_time = wall_time
        rows = []
        episodes = zip(batch.ep_returns.tolist(), batch.ep_lengths.tolist(), strict=True)
        for ep_return, length in episodes:
            self.episodes += 1
            self.steps += length
            self.recent_returns.append(ep_return)
            old = self.running_return
            self.running_return = ep_return if old is None else 0.99 * old + 0.01 * ep_return
            mean100 = self.mean100
            if solved_mean100 is not None and self.solved_episode is None:
                if len(self.recent_returns) == 100 and mean100 >= solved_mean100:
                    self.solved_episode = self.episodes
            returns = (repr(ep_return), repr(self.running_return), repr(mean100))
            rows.append(
                [self.episodes, self.steps, f"{wall_time:.3f}", *returns, length, self.updates]
            )
        update = [
            self.updates,
            self.episodes,
            self.steps,
            batch.steps,
            *(repr(stats[k]) for k in ("loss", "grad_norm", "mean_prob", "entropy")),
            *(f"{x:.4f}" for x in seconds[:4]),
            *(repr(stats.get(k, float("nan"))) for k in OPTIONAL_COLUMNS),
            f"{seconds[4]:.4f}",
        ]
        return rows, update

    def stop_reason(self, t) -> str | None:
        """Why the run stops before another update (``t``: the config's ``train`` section)."""
        if self.episodes >= t.episodes:
            return "episodes"
        if t.solved_mean100 is not None and self.solved_episode is not None:
            return "solved"
        if t.max_steps is not None and self.env_steps >= t.max_steps:
            return "max_steps"
        if t.max_seconds is not None and self.wall_time >= t.max_seconds:
            return "max_seconds"
        return None

    def summary(self, cfg: Config, backend: str, stopped_by: str) -> dict:
        wall = self.wall_time
        return {
            "backend": backend,
            "seed": cfg.train.seed,
            "env": cfg.env.id,
            "episodes": self.episodes,
            "steps": self.steps,
            "env_steps": self.env_steps,
            "updates": self.updates,
            "wall_time": round(wall, 3),
            "steps_per_second": round(self.env_steps / wall, 1) if wall > 0 else 0.0,
            "solved": self.solved_episode is not None,
            "solved_episode": self.solved_episode,
            "final_running_return": self.running_return,
            "mean100": self.mean100 if self.recent_returns else None,
            "stopped_by": stopped_by,
        }

    def progress(self) -> dict:
        """The run so far, as reported after each update."""
        return {
            "updates": self.updates,
            "episodes": self.episodes,
            "steps": self.env_steps,
            "running_return": self.running_return,
            "mean100": self.mean100 if self.recent_returns else None,
            "seconds": round(self.wall_time, 3),
            "solved_episode": self.solved_episode,
        }

    def to_dict(self) -> dict:
        return {**self.__dict__, "recent_returns": list(self.recent_returns)}

    @classmethod
    def from_dict(cls, state: dict) -> RunState:
        return cls(**{**state, "recent_returns": deque(state["recent_returns"], maxlen=100)})


# Config keys a resumed run may change and stay the same run: budgets and the goal that stop it,
# logging, checkpoints, the backend (both compute the same mathematics), train.init (read at the
# start only: the checkpoint holds what came of it) and where the slots run (the restored
# checkpoint must have as many). Any other change needs allow_changes.
RESUMABLE_CHANGES = frozenset(
    "policy.backend train.episodes train.max_steps train.max_seconds train.solved_mean100 "
    "train.checkpoint_every train.init env.runner env.num_envs env.num_workers "
    "env.envs_per_worker log.progress log.tensorboard".split()
)
# What a run writes into its directory, in the order a copy writes them: rows before the checkpoint
# (rows past a checkpoint are cut on resume, missing ones would not be), summary.json last (a
# directory with a summary holds a finished run). Removal goes in the reverse order.
RUN_FILES = "metrics.csv updates.csv config.toml resumes.log checkpoint.npz summary.json".split()


def remove_run(run_dir: Path) -> None:
    """Remove the run's files from ``run_dir``; other files stay."""
    for name in reversed(RUN_FILES):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def episodes_logged(run_dir: Path) -> int:
    """Rows in the run's ``metrics.csv`` (0 without one)."""
    try:
        with open(run_dir / "metrics.csv", "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def read_run_files(run_dir: Path) -> dict[str, bytes]:
    return {n: (run_dir / n).read_bytes() for n in RUN_FILES if (run_dir / n).is_file()}


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if name in files:
            write_atomic(run_dir / name, files[name])


def show_path(path: str | Path, limit: int = 120) -> str:
    """``path`` for a one-line message: a long one keeps its start and end."""
    text = str(path)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...{text[-(limit // 3) :]} ({len(text):,} chars)"


def out_error(path: str | Path, e: OSError, tail: str = "") -> ConfigError:
    """``--out PATH: reason`` for an OSError met at ``path``; a full disk is named as such."""
    reason = "no space left on the device" if e.errno == errno.ENOSPC else e.strerror or e
    return ConfigError(f"--out {show_path(path)}: {reason}{tail}")


class RunDir:
    """The run directory ``path``: :meth:`prepare` checks and locks it before any of the run's
    files is touched, :meth:`start` opens it. The lock is an ``flock`` on ``.lock`` (the kernel
    drops it when a process dies, so a killed run never blocks the next one)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint_path = self.path / "checkpoint.npz"
        self.metrics_path = self.path / "metrics.csv"
        self.updates_path = self.path / "updates.csv"
        self._kept: tuple[list, list] = ([], [])
        self._files: list = []
        self._lock_fd: int | None = None
        self._changes: list[str] = []
        self._created = self._started = False  # a directory made for a run that never started goes

    def prepare(
        self, cfg: Config, resume: bool, overwrite: bool, allow_changes: bool = False
    ) -> dict | None:
        """Lock and check the directory; returns the checkpoint to resume from, or None."""
        out = self.path
        if allow_changes and not resume:
            raise ConfigError("--allow-changes: only applies with --resume (to a run's config)")
        if resume and overwrite:
            raise ConfigError("--resume and --force: choose one")
        check_out_dir(out, "run")
        self._created = created = not out.exists()
        try:
            self._lock()
            checkpoint = self._check(cfg, resume, overwrite, allow_changes)
            # who holds the run, for a second writer's message; written once the run is accepted
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException as e:
            self.close()
            if created:  # the lock may not have been taken
                shutil.rmtree(out, ignore_errors=True)
            if isinstance(e, OSError):  # a full disk, a vanished directory: nothing was written
                raise out_error(out, e) from None
            raise
        return checkpoint

    def _lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise out_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"--out {self.path}: another pgrl process (pid {holder}) is writing this run; "
                "wait for it to end or choose another directory"
            ) from None
        self._lock_fd = fd

    def _check(self, cfg: Config, resume: bool, overwrite: bool, allow_changes: bool):
        out = self.path
        remove_temp_files(out)
        holds_run = self.checkpoint_path.exists() or self.metrics_path.exists()
        if not resume and holds_run and not overwrite:
            raise ConfigError(
                f"--out {out}: already holds a run; add --resume to continue it, --force to "
                "replace it, or choose another directory"
            )
        if not resume:
            if overwrite:
                remove_run(out)
            return None
        if not self.checkpoint_path.exists():
            if holds_run and not _kept_rows(self.metrics_path, METRICS_HEADER, "episode", 2**62):
                remove_run(out)  # killed while writing its first checkpoint: nothing to lose
                return None
            hint = " (add --force to start afresh there)" if holds_run else ""
            raise CheckpointError(
                f"{self.checkpoint_path}: nothing to resume (no checkpoint){hint}"
            )
        checkpoint = load_checkpoint(self.checkpoint_path)
        self._changes = _config_changes(checkpoint["config"], cfg, self.checkpoint_path)
        changed = [c.split(":")[0] for c in self._changes]
        forbidden = [key for key in changed if key not in RESUMABLE_CHANGES]
        if forbidden and not allow_changes:
            raise ConfigError(
                f"--resume {out}: the config differs from the run's in {', '.join(forbidden)}; "
                "resume with the run's config, or add --allow-changes to continue anyway"
            )
        state = checkpoint["state"]
        self._kept = (
            _kept_rows(self.metrics_path, METRICS_HEADER, "episode", state["episodes"]),
            _kept_rows(self.updates_path, UPDATES_HEADER, "update", state["updates"]),
        )
        _check_rows(self._kept, state, self.metrics_path, self.updates_path)
        return checkpoint

    def restore(
        self, checkpoint: dict, policy, rngs: list[np.random.Generator], value=None
    ) -> RunState:
        """Load a checkpoint from :meth:`prepare` into the policy, the slots' ``rngs`` and the
        value network; its counters. A value network new to the run keeps its initial weights."""
        from pgrl.rollout import set_slot_states

        restore_policy(policy, checkpoint, self.checkpoint_path)
        baseline_added = any(c.startswith("train.baseline:") for c in self._changes)
        if value is not None and (checkpoint["value_weights"] or not baseline_added):
            restore_value(value, checkpoint, self.checkpoint_path)
        rng_state = checkpoint["rng_state"]
        slots = rng_state.get("slots") if isinstance(rng_state, dict) else None
        if isinstance(slots, list) and len(slots) != len(rngs):  # each slot has its own stream
            raise CheckpointError(
                f"{self.checkpoint_path}: the run has {len(slots)} env slots, the config "
                f"{len(rngs)}: resume with the run's env.num_envs (env.num_workers x "
                'env.envs_per_worker with env.runner = "ray")'
            )
        try:
            set_slot_states(rngs, rng_state)
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{self.checkpoint_path}: unusable RNG state: {e}") from None
        return RunState.from_dict(checkpoint["state"])

    def start(self, cfg: Config) -> None:
        """Write the config and the kept rows, and open the CSVs for appending."""
        self._started = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path / "config.toml", cfg.to_toml())
            write_atomic(self.metrics_path, csv_text(METRICS_HEADER, self._kept[0]))
            write_atomic(self.updates_path, csv_text(UPDATES_HEADER, self._kept[1]))
            if self._changes:
                with open(self.path / "resumes.log", "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} resumed with: ")
                    f.write("; ".join(self._changes) + "\n")
        except OSError as e:
            raise out_error(self.path, e) from None
        self._files = [
            os.open(p, os.O_WRONLY | os.O_APPEND) for p in (self.metrics_path, self.updates_path)
        ]

    def log(self, episode_rows: list[list], update_row: list) -> None:
        """Append rows to metrics.csv and updates.csv; a failed write is cut back, so no row is
        ever torn."""
        metrics, updates = self._files
        for fd, rows, path in (
            (metrics, episode_rows, self.metrics_path),
            (updates, [update_row], self.updates_path),
        ):
            text = io.StringIO()
            csv.writer(text).writerows(rows)
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(text.getvalue().encode())
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as e:
                os.ftruncate(fd, end)
                raise self._write_error(path, e) from None

    def _write_error(self, path: Path, e: OSError) -> ConfigError:
        return ConfigError(
            f"{show_path(path)}: cannot write ({e.strerror or e}); the run stopped with its last "
            "checkpoint intact: make room, then --resume"
        )

    def save_checkpoint(
        self, policy, state: RunState, rng_state: dict, cfg: Config, value=None
    ) -> None:
        try:
            save_checkpoint(
                self.checkpoint_path, policy, state.to_dict(), rng_state, cfg.to_toml(), value
            )
        except OSError as e:
            raise self._write_error(self.checkpoint_path, e) from None

    def write_summary(self, summary: dict) -> None:
        try:
            write_atomic(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")
        except OSError as e:
            raise self._write_error(self.path / "summary.json", e) from None

    def close(self) -> None:
        for fd in self._files:
            os.close(fd)
        self._files = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
            if self._created and not self._started:
                shutil.rmtree(self.path, ignore_errors=True)


def _config_changes(stored_toml: str, cfg: Config, path: Path) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs from the stored config's."""
    try:
        stored = from_dict(
            tomllib.loads(stored_toml), f"{path} (embedded config)", stored=True
        ).to_dict()
    except (tomllib.TOMLDecodeError, RecursionError, ConfigError) as e:
        raise CheckpointError(f"{path}: unusable embedded config ({e})") from None
    changes = []
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            if stored[section][key] != value:
                changes.append(f"{section}.{key}: {stored[section][key]!r} -> {value!r}")
    return changes


def _check_rows(kept: tuple[list, list], state: dict, metrics: Path, updates: Path) -> None:
    """The kept rows must number episodes and updates 1..N as the checkpoint counts them, and
    end at its totals; otherwise numbering would restart, skip or repeat silently."""
    fix = "restore the file, or start afresh with --force"
    for rows, path, key, column, ends in (
        (kept[0], metrics, "episodes", "episode", ("steps",)),
        (kept[1], updates, "updates", "update", ("episodes", "steps")),
    ):
        if len(rows) != state[key]:
            raise CheckpointError(
                f"{path}: holds {len(rows)} rows of the checkpoint's {state[key]} {key}; {fix}"
            )
        for i, row in enumerate(rows, 1):
            if int(row[column]) != i:
                raise CheckpointError(
                    f"{path}: row {i} is {column} {row[column]}, expected {i} "
                    f"({key} must be numbered 1..{state[key]}); {fix}"
                )
        for end in ends if rows else ():
            if rows[-1][end] != str(state[end]):
                raise CheckpointError(
                    f"{path}: its last row has {end} {_cut(rows[-1][end])}, the "
                    f"checkpoint {state[end]}; {fix}"
                )


def _kept_rows(path: Path, header: list[str], key: str, last: int) -> list[dict]:
    """Rows of a run's CSV with ``key <= last`` (rows past a checkpoint were lost work), read
    before anything is written; a torn or garbled row (a crash mid-write) is dropped."""
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CheckpointError(f"{path}: cannot read it to resume ({e})") from None
    kept = []
    for row in rows:
        # the value columns are absent from the rows of older runs
        row = {
            c: "nan" if c in LATER_COLUMNS and row.get(c) is None else row.get(c) for c in header
        }
        with contextlib.suppress(ValueError):
            if None not in row.values() and "" not in row.values() and int(row[key]) <= last:
                kept.append(row)
    return kept


# what marks a directory as a pgrl train run's (a run that has just taken its lock included)
RUN_MARKERS = ("checkpoint.npz", "metrics.csv", ".lock")


def check_out_dir(out: str | Path, kind: str) -> Path:
    """``--out`` of a ``kind`` ("run", "sweep" or "comparison") as a Path: not empty, not a file,
    a name the OS takes, and not a directory of another kind (a train run's, a sweep's), which
    neither kind's --force may mix into or take over."""
    if str(out).strip() == "":
        raise ConfigError("--out: empty path; give a directory for the results")
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {show_path(out)}: exists and is not a directory")
        if kind != "run" and any((out / name).is_file() for name in RUN_MARKERS):
            holds = "a pgrl train run"
        elif kind != "sweep" and (out / "sweep.json").exists():
            holds = "a sweep (sweep.json)"
        else:
            return out
    except OSError as e:  # e.g. a name too long for the filesystem
        raise out_error(out, e) from None
    raise ConfigError(
        f"--out {show_path(out)}: holds {holds}; a {kind} needs a directory of its own"
    )


def csv_text(header: list[str], rows: list[dict]) -> str:
    """A CSV with ``header`` and ``rows`` (dicts; keys not in ``header`` are left out)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """A ``metrics.csv`` as float columns: ``{"episode": (E,), "return": (E,), ...}``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in METRICS_HEADER}

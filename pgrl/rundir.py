"""A training run on disk: its directory, counters, CSVs, checkpoint and summary.

A run directory holds ``config.toml`` (the resolved config), ``metrics.csv`` (one row per
episode), ``updates.csv`` (one row per update), ``checkpoint.npz`` (see :mod:`pgrl.checkpoint`)
and ``summary.json``. Rows are appended and flushed as the run goes; on resume, rows past the
checkpoint (lost work) and torn rows (a crash mid-write) are dropped before anything is written.
"""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgrl.checkpoint import CheckpointError, load_checkpoint, restore_policy, save_checkpoint
from pgrl.config import Config, ConfigError

# The columns of metrics.csv (one row per episode) and updates.csv (one row per update)
METRICS_HEADER = "episode steps wall_time return running_return mean100 length update".split()
UPDATES_HEADER = (
    "update episodes steps batch_steps loss grad_norm mean_prob entropy "
    "rollout_seconds update_seconds"
).split()


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
        seconds: tuple[float, float],
        wall_time: float,
        solved_mean100: float | None,
    ) -> tuple[list[list], list]:
        """Count one update and its batch's episodes, in order; returns the rows they add to
        ``metrics.csv`` (one per episode) and ``updates.csv``.

        Per episode: Karpathy's running return ``0.99 * old + 0.01 * return`` (the first
        episode's return to begin with), mean100, and the episode at which mean100 first
        reaches ``solved_mean100``.
        """
        self.updates += 1
        self.env_steps += batch.env_steps
        self.wall_time = wall_time
        rows = []
        for ep_return, length in zip(
            batch.ep_returns.tolist(), batch.ep_lengths.tolist(), strict=True
        ):
            self.episodes += 1
            self.steps += length
            self.recent_returns.append(ep_return)
            old = self.running_return
            self.running_return = ep_return if old is None else 0.99 * old + 0.01 * ep_return
            mean100 = self.mean100
            if (
                solved_mean100 is not None
                and self.solved_episode is None
                and len(self.recent_returns) == 100
                and mean100 >= solved_mean100
            ):
                self.solved_episode = self.episodes
            rows.append(
                [
                    self.episodes,
                    self.steps,
                    f"{wall_time:.3f}",
                    repr(ep_return),
                    repr(self.running_return),
                    repr(mean100),
                    length,
                    self.updates,
                ]
            )
        update = [
            self.updates,
            self.episodes,
            self.steps,
            batch.steps,
            *(repr(stats[k]) for k in ("loss", "grad_norm", "mean_prob", "entropy")),
            f"{seconds[0]:.4f}",
            f"{seconds[1]:.4f}",
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
        """What ``summary.json`` holds."""
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

    def to_dict(self) -> dict:
        """As :func:`pgrl.checkpoint.save_checkpoint` takes it."""
        return {**self.__dict__, "recent_returns": list(self.recent_returns)}

    @classmethod
    def from_dict(cls, state: dict) -> RunState:
        return cls(**{**state, "recent_returns": deque(state["recent_returns"], maxlen=100)})


class RunDir:
    """The run directory ``path``: :meth:`prepare` checks it, :meth:`start` opens it.

    Everything that can refuse a run (a file in the way, a forgotten ``--resume``, a missing or
    corrupt checkpoint, unreadable CSVs) is checked by :meth:`prepare`, before a file is
    touched.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint_path = self.path / "checkpoint.npz"
        self.metrics_path = self.path / "metrics.csv"
        self.updates_path = self.path / "updates.csv"
        self._kept: tuple[list, list] = ([], [])
        self._files: list = []

    def prepare(self, resume: bool, overwrite: bool) -> dict | None:
        """Check the directory; returns the checkpoint to resume from (``resume``) or None.

        Raises:
            ConfigError: the path is a file, or it holds a run and neither ``resume`` nor
                ``overwrite`` was given.
            CheckpointError: ``resume`` without a usable checkpoint or readable CSVs.
        """
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a directory")
        holds_run = self.checkpoint_path.exists() or self.metrics_path.exists()
        if not resume and not overwrite and holds_run:
            raise ConfigError(
                f"--out {out}: already holds a run; add --resume to continue it, or choose another"
            )
        if not resume:
            return None
        if not self.checkpoint_path.exists():
            raise CheckpointError(f"{self.checkpoint_path}: nothing to resume (no checkpoint)")
        checkpoint = load_checkpoint(self.checkpoint_path)
        state = checkpoint["state"]
        self._kept = (
            _kept_rows(self.metrics_path, METRICS_HEADER, "episode", state["episodes"]),
            _kept_rows(self.updates_path, UPDATES_HEADER, "update", state["updates"]),
        )
        return checkpoint

    def restore(self, checkpoint: dict, policy, rng: np.random.Generator) -> RunState:
        """Load a checkpoint from :meth:`prepare` into ``policy`` and ``rng``; its counters."""
        restore_policy(policy, checkpoint, self.checkpoint_path)
        try:
            rng.bit_generator.state = checkpoint["rng_state"]
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{self.checkpoint_path}: unusable RNG state ({e})") from None
        return RunState.from_dict(checkpoint["state"])

    def start(self, cfg: Config) -> None:
        """Write the config and the kept rows, and open the CSVs for appending."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.toml").write_text(cfg.to_toml())
            _write_csv_atomic(self.metrics_path, METRICS_HEADER, self._kept[0])
            _write_csv_atomic(self.updates_path, UPDATES_HEADER, self._kept[1])
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot write the run there ({e})") from None
        self._files = [open(p, "a", newline="") for p in (self.metrics_path, self.updates_path)]
        self.metrics, self.updates = (csv.writer(f) for f in self._files)

    def log(self, episode_rows: list[list], update_row: list) -> None:
        """Append rows to ``metrics.csv`` and ``updates.csv`` and flush both."""
        self.metrics.writerows(episode_rows)
        self.updates.writerow(update_row)
        for f in self._files:
            f.flush()

    def save_checkpoint(self, policy, state: RunState, rng_state: dict, cfg: Config) -> None:
        save_checkpoint(self.checkpoint_path, policy, state.to_dict(), rng_state, cfg.to_toml())

    def write_summary(self, summary: dict) -> None:
        tmp = self.path / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(self.path / "summary.json")

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


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
        if any(row.get(col) in (None, "") for col in header):
            continue
        try:
            if int(row[key]) <= last:
                kept.append({col: row[col] for col in header})
        except ValueError:
            continue
    return kept


def _write_csv_atomic(path: Path, header: list[str], rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """A ``metrics.csv`` as float columns: ``{"episode": (E,), "return": (E,), ...}``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in METRICS_HEADER}

"""Checkpoints: one ``.npz`` of plain arrays (no pickle), written atomically.

Contents: ``w_<name>`` weights, ``opt_v_<name>`` and ``opt_step`` RMSprop state, run counters,
the action RNG's state (JSON text), the last 100 episode returns, and the resolved config (TOML
text). A checkpoint written by one backend loads into the other.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
COUNTERS = ("episodes", "steps", "env_steps", "updates")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, reported as one line."""


def save_checkpoint(path: str | Path, policy, state: dict, rng_state: dict, config_toml: str):
    """Write ``path`` atomically: a temp file in the same folder, fsync, then rename over."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"format_version": np.int64(FORMAT_VERSION)}
    arrays.update({f"w_{k}": v for k, v in policy.get_weights().items()})
    arrays.update({f"opt_{k}": v for k, v in policy.get_optimizer_state().items()})
    for key in COUNTERS:
        arrays[key] = np.int64(state[key])
    arrays["wall_time"] = np.float64(state["wall_time"])
    running = state["running_return"]
    arrays["running_return"] = np.float64(np.nan if running is None else running)
    solved = state["solved_episode"]
    arrays["solved_episode"] = np.int64(-1 if solved is None else solved)
    arrays["recent_returns"] = np.asarray(state["recent_returns"], dtype=np.float64)
    arrays["rng_state"] = np.array(json.dumps(rng_state))
    arrays["config"] = np.array(config_toml)
    arrays["backend"] = np.array(policy.backend)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint; raises :class:`CheckpointError` naming what is wrong.

    Returns:
        dict with ``weights``, ``optimizer_state`` (dicts of arrays), ``state`` (counters, as
        save_checkpoint takes them), ``rng_state`` (dict), ``config`` (TOML text), ``backend``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({e})") from None
    required = (
        "format_version",
        *COUNTERS,
        "wall_time",
        "running_return",
        "solved_episode",
        "recent_returns",
        "rng_state",
        "config",
        "backend",
    )
    missing = [k for k in required if k not in data]
    if missing:
        raise CheckpointError(f"{path}: not a pgrl checkpoint (missing {', '.join(missing)})")
    if int(data["format_version"]) != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {int(data['format_version'])}, expected {FORMAT_VERSION}"
        )
    try:
        rng_state = json.loads(str(data["rng_state"]))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt RNG state") from None
    try:
        running = float(data["running_return"])
        solved = int(data["solved_episode"])
        counters = {k: int(data[k]) for k in COUNTERS}
        wall_time = float(data["wall_time"])
        recent = [float(x) for x in np.asarray(data["recent_returns"], dtype=np.float64).ravel()]
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt counters ({e})") from None
    return {
        "weights": {k[2:]: v for k, v in data.items() if k.startswith("w_")},
        "optimizer_state": {k[4:]: v for k, v in data.items() if k.startswith("opt_")},
        "state": {
            **counters,
            "wall_time": wall_time,
            "running_return": None if np.isnan(running) else running,
            "solved_episode": None if solved < 0 else solved,
            "recent_returns": recent,
        },
        "rng_state": rng_state,
        "config": str(data["config"]),
        "backend": str(data["backend"]),
    }


def restore_policy(policy, checkpoint: dict, path: str | Path) -> None:
    """Load weights and optimizer state, or raise CheckpointError (the policy is then unchanged)."""
    try:
        weights_before = policy.get_weights()
        policy.set_weights(checkpoint["weights"])
        try:
            policy.set_optimizer_state(checkpoint["optimizer_state"])
        except ValueError:
            policy.set_weights(weights_before)
            raise
    except ValueError as e:
        raise CheckpointError(f"{path}: does not fit this network: {e}") from None

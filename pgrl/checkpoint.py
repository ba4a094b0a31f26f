"""Checkpoints and weights files: ``.npz`` files of plain arrays (no pickle), written atomically.

A checkpoint (``checkpoint.npz`` of a run) holds ``w_<name>`` weights, ``opt_v_<name>`` and
``opt_step`` RMSprop state, run counters, the action RNG's state (JSON text), the last 100
episode returns, and the resolved config (TOML text): everything ``--resume`` needs.

A weights file (``pgrl export``, e.g. the shipped ``pgrl/pretrained/pong.npz``) holds only the
``w_<name>`` weights, the config they were trained with, and a few facts about the run (JSON):
everything ``pgrl eval`` and :func:`pgrl.load_policy` need. Both kinds load into either backend.

Both record the policy's ``head`` and ``n_actions`` (files without them hold a Bernoulli policy;
the gaussian head's ``n_actions`` is its action dimension), and load only into a policy of the
same head and action count. A policy trained with ``env.normalize_obs`` also leaves its
observation statistics in both (``obs_mean``, ``obs_var``, ``obs_count``: :mod:`pgrl.normalize`).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from pgrl.atomic import write_atomic
from pgrl.config import ConfigError
from pgrl.distributions import Bernoulli, make_distribution
from pgrl.normalize import KEYS as OBS_NORM_KEYS
from pgrl.pretrained import resolve
from pgrl.validate import BACKENDS

FORMAT_VERSION = 1
COUNTERS = ("episodes", "steps", "env_steps", "updates")
WEIGHTS_KIND = "pgrl-weights"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, reported as one line."""


def save_checkpoint(
    path: str | Path, policy, state: dict, rng_state: dict, config_toml: str, value=None
):
    """Write ``path`` atomically; ``value`` (the run's value network, if any) as ``vw_*``,
    ``vopt_*``."""
    arrays: dict[str, np.ndarray] = {"format_version": np.int64(FORMAT_VERSION)}
    arrays.update({f"w_{k}": v for k, v in policy.get_weights().items()})
    arrays.update({f"opt_{k}": v for k, v in policy.get_optimizer_state().items()})
    if value is not None:
        arrays.update({f"vw_{k}": v for k, v in value.get_weights().items()})
        arrays.update({f"vopt_{k}": v for k, v in value.get_optimizer_state().items()})
    arrays.update({k: np.int64(state[k]) for k in COUNTERS})
    arrays["wall_time"] = np.float64(state["wall_time"])
    running = state["running_return"]
    arrays["running_return"] = np.float64(np.nan if running is None else running)
    solved = state["solved_episode"]
    arrays["solved_episode"] = np.int64(-1 if solved is None else solved)
    arrays["recent_returns"] = np.asarray(state["recent_returns"], dtype=np.float64)
    arrays["rng_state"] = np.array(json.dumps(rng_state))
    arrays["config"] = np.array(config_toml)
    arrays["backend"], arrays["head"] = np.array(policy.backend), np.array(policy.head)
    arrays["n_actions"] = np.int64(policy.n_actions)
    if policy.obs_norm is not None:
        arrays.update(policy.obs_norm.state())
    write_atomic(path, lambda f: np.savez(f, **arrays))


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # .npz files are zip archives
    if not is_zip:  # np.load would try it as a .npy array or a pickle
        raise CheckpointError(
            f"{path}: not a pgrl checkpoint or weights file (not an .npz archive)"
        )
    try:
        check_npz_members(path, what)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except CheckpointError:
        raise
    except (*ZIP_ERRORS, MemoryError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({e})") from None


# What zipfile and np.load raise on a damaged archive: besides the usual, RuntimeError for a
# member flagged as encrypted and NotImplementedError for an unknown compression method
ZIP_ERRORS = (
    zipfile.BadZipFile,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    RuntimeError,
    NotImplementedError,
)


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def check_npz_members(path: Path, what: str) -> None:
    """Read every member's ``.npy`` header, not its data: an object array (which only a pickle
    can load) or a shape larger than the bytes stored is refused before anything is allocated."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{path}: not a pgrl {what} ({name!r} is not an array)")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = _HEADER_READERS.get(version)
                if read_header is None:
                    raise CheckpointError(f"{path}: {name}: unknown .npy version {version}")
                shape, _, dtype = read_header(f)
                stored = info.file_size - f.tell()
            if dtype.hasobject:
                raise CheckpointError(
                    f"{path}: {name} holds a Python object array, not numbers: not a pgrl {what}"
                )
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > stored:
                raise CheckpointError(
                    f"{path}: corrupt {what}: {name}'s header claims shape {shape} "
                    f"({claimed:,} bytes) but {stored:,} bytes are stored"
                )


def _check_header(data: dict, path: Path, what: str, required: tuple[str, ...]) -> None:
    missing = [k for k in ("format_version", *required) if k not in data]
    if missing:
        raise CheckpointError(f"{path}: not a pgrl {what} (missing {', '.join(missing)})")
    try:
        version = int(data["format_version"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: corrupt format version") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: {what} format {version}, expected {FORMAT_VERSION}")


def is_weights_file(path: str | Path) -> bool:
    """Whether ``path`` is an .npz written by :func:`save_weights` (reads only its names)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "kind" in npz.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def save_weights(
    path: str | Path,
    weights: dict,
    config_toml: str,
    info: dict,
    head: str = "bernoulli",
    n_actions: int = 2,
    obs_norm: dict | None = None,
) -> None:
    """Write a compressed weights file atomically; ``obs_norm``: the policy's observation
    statistics (:meth:`pgrl.normalize.ObsNormalizer.state`), if it has them."""
    arrays: dict[str, np.ndarray] = {
        "kind": np.array(WEIGHTS_KIND),
        "format_version": np.int64(FORMAT_VERSION),
        "config": np.array(config_toml),
        "info": np.array(json.dumps(info)),
        "head": np.array(head),
        "n_actions": np.int64(n_actions),
    }
    arrays.update({f"w_{k}": np.asarray(v) for k, v in weights.items()})
    arrays.update(obs_norm or {})
    write_atomic(path, lambda f: np.savez_compressed(f, **arrays))


def _float_weights(data: dict, prefix: str, path: Path) -> dict[str, np.ndarray]:
    """The arrays named ``<prefix><name>``, as ``{name: array}``; CheckpointError unless floats."""
    weights = {k.removeprefix(prefix): v for k, v in data.items() if k.startswith(prefix)}
    for name, w in weights.items():
        if w.dtype.kind != "f":
            raise CheckpointError(f"{path}: weights {name!r} are {w.dtype}, not floats")
    return weights


def _read_head(data: dict, path: Path) -> tuple[str, int]:
    """The recorded ``(head, n_actions)``; files from before heads hold a Bernoulli policy."""
    if "head" not in data:
        return Bernoulli.name, Bernoulli.n_actions
    head = str(data["head"])
    try:
        n_actions = int(data["n_actions"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: corrupt or missing action count") from None
    try:
        make_distribution(head, n_actions)
    except ValueError:
        raise CheckpointError(
            f"{path}: corrupt policy head {head[:40]!r} with {n_actions} actions"
        ) from None
    return head, n_actions


def read_init(source: str) -> dict:
    """The weights ``train.init`` names (a file, a run directory, or a shipped name: pong), as
    :func:`load_weights` gives them; ConfigError if it names nothing, CheckpointError if what it
    names holds no weights."""
    try:
        path = resolve(source)
    except FileNotFoundError as e:
        raise ConfigError(f"train.init: {e}") from None
    return load_weights(path)


def load_weights(path: str | Path) -> dict:
    """A checkpoint or weights file for playing: ``weights``, ``config`` (TOML), ``info``,
    ``optimizer_state`` (empty for a weights file), ``head``, ``n_actions``."""
    path = Path(path)
    data = _read_npz(path, "checkpoint or weights file")
    if "kind" not in data:
        ckpt = load_checkpoint(path)
        keys = ("weights", "config", "optimizer_state", "head", "n_actions", "obs_norm")
        info = {k: ckpt["state"][k] for k in (*COUNTERS, "running_return")}
        return {"info": info, **{k: ckpt[k] for k in keys}}
    if str(data["kind"]) != WEIGHTS_KIND:
        raise CheckpointError(f"{path}: not a pgrl weights file (kind {str(data['kind'])!r})")
    _check_header(data, path, "weights file", ("config", "info"))
    try:
        info = json.loads(str(data["info"]))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt info text") from None
    weights = _float_weights(data, "w_", path)
    if not weights:
        raise CheckpointError(f"{path}: a weights file without weights")
    head, n_actions = _read_head(data, path)
    return {
        "weights": weights,
        "config": str(data["config"]),
        "info": info,
        "optimizer_state": {},
        "head": head,
        "n_actions": n_actions,
        "obs_norm": _obs_norm(data),
    }


def _obs_norm(data: dict) -> dict:
    """The observation statistics a file holds (empty if none)."""
    return {k: data[k] for k in OBS_NORM_KEYS if k in data}


# what a checkpoint holds besides its arrays
REQUIRED = (*COUNTERS, *"wall_time running_return solved_episode recent_returns".split())
REQUIRED += ("rng_state", "config", "backend")


def _read_state(data: dict, path: Path) -> dict:
    try:
        running = float(data["running_return"])
        solved = int(data["solved_episode"])
        counters = {k: _count(data[k], k) for k in COUNTERS}
        if min(counters.values()) < 0:
            raise ValueError(f"negative counters {counters}")
        wall_time = float(data["wall_time"])
        if not 0 <= wall_time < math.inf:
            raise ValueError(f"wall_time = {wall_time:g}")
        return {
            **counters,
            "wall_time": wall_time,
            "running_return": None if np.isnan(running) else running,
            "solved_episode": None if solved < 0 else solved,
            "recent_returns": [
                float(x) for x in np.asarray(data["recent_returns"], dtype=np.float64).ravel()
            ],
        }
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt counters ({e})") from None


def _count(value, name: str) -> int:
    """A counter as int: a whole number in int64's range, as ``np.int64`` stores it."""
    number = float(value)
    if not (abs(number) < 2**63 and number == int(number)):
        raise ValueError(f"{name} = {number:g}")
    return int(value)


def load_checkpoint(path: str | Path) -> dict:
    """A checked checkpoint: ``weights``, ``optimizer_state``, ``value_weights`` and
    ``value_optimizer_state`` (empty without a value network), ``state`` (counters),
    ``rng_state``, ``config`` (TOML), ``backend``, ``head`` and ``n_actions``."""
    path = Path(path)
    data = _read_npz(path, "checkpoint")
    if "kind" in data:
        raise CheckpointError(
            f"{path}: a weights file ({str(data['kind'])}), not a checkpoint: it can be played "
            "(pgrl eval) but not resumed"
        )
    _check_header(data, path, "checkpoint", REQUIRED)
    try:
        rng_state = json.loads(str(data["rng_state"]))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt RNG state") from None
    state = _read_state(data, path)
    backend = str(data["backend"])
    if backend not in BACKENDS:
        raise CheckpointError(
            f"{path}: unknown backend {backend[:40]!r}, expected one of {', '.join(BACKENDS)}"
        )
    weights = _float_weights(data, "w_", path)
    value_weights = _float_weights(data, "vw_", path)
    head, n_actions = _read_head(data, path)
    return {
        "head": head,
        "n_actions": n_actions,
        "obs_norm": _obs_norm(data),
        "weights": weights,
        "optimizer_state": {k[4:]: v for k, v in data.items() if k.startswith("opt_")},
        "value_weights": value_weights,
        "value_optimizer_state": {k[5:]: v for k, v in data.items() if k.startswith("vopt_")},
        "state": state,
        "rng_state": rng_state,
        "config": str(data["config"]),
        "backend": backend,
    }


def restore_policy(policy, checkpoint: dict, path: str | Path, optimizer: bool = True) -> None:
    """Load weights and (with ``optimizer``) the optimizer state; CheckpointError leaves the
    policy unchanged."""
    saved = (checkpoint["head"], checkpoint["n_actions"])
    if saved != (policy.head, policy.n_actions):
        raise CheckpointError(
            f"{path}: holds a {saved[0]} policy with {saved[1]} actions, but this policy is "
            f"{policy.head} with {policy.n_actions} actions"
        )
    state = checkpoint["optimizer_state"] if optimizer else None
    stats = checkpoint.get("obs_norm") or {}
    if policy.obs_norm is None and stats:
        raise CheckpointError(
            f"{path}: was trained on normalized observations (env.normalize_obs = true), but "
            "this policy has no observation statistics"
        )
    if policy.obs_norm is not None:
        if not stats:
            raise CheckpointError(
                f"{path}: holds no observation statistics (trained without env.normalize_obs)"
            )
        try:
            policy.obs_norm.set_state(stats)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
    _load(policy, checkpoint["weights"], state, f"{path}: does not fit this network")


def _load(net, weights: dict, optimizer_state: dict | None, what: str) -> None:
    """Set ``net``'s weights and (unless None) its RMSprop state, all or nothing."""
    before = net.get_weights()
    try:
        net.set_weights(weights)
        if optimizer_state is not None:
            net.set_optimizer_state(optimizer_state)
    except ValueError as e:
        net.set_weights(before)
        raise CheckpointError(f"{what}: {e}") from None


def restore_value(value, checkpoint: dict, path: str | Path) -> None:
    """Load the value network's weights and RMSprop state, all or nothing."""
    if not checkpoint.get("value_weights"):
        raise CheckpointError(
            f"{path}: holds no value network (the run was trained with train.baseline = 'none')"
        )
    _load(
        value,
        checkpoint["value_weights"],
        checkpoint["value_optimizer_state"],
        f"{path}: its value network does not fit this one",
    )

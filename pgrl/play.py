"""Trained policies at work: load one, play it, export its weights, record a GIF.

policy = pgrl.load_policy("pong")            # a shipped agent, a checkpoint or weights file
result = evaluate("runs/pong/checkpoint.npz", episodes=10, gif="pong.gif")
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

import gymnasium as gym
import numpy as np

from pgrl.atomic import write_atomic
from pgrl.build import build_policy, check_head
from pgrl.checkpoint import (
    CheckpointError,
    is_weights_file,
    load_checkpoint,
    load_weights,
    restore_policy,
    save_weights,
)
from pgrl.config import Config, ConfigError, from_dict
from pgrl.rollout import env_actions


def _read_playable(source: str | Path) -> tuple[Path, dict, Config]:
    """(path, load_weights dict, config) of a checkpoint, a weights file or a pretrained name."""
    from pgrl.pretrained import resolve

    try:
        path = resolve(source)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    data = load_weights(path)
    return path, data, _embedded_config(data["config"], path)


def load_policy(source: str | Path, backend: str | None = None):
    """A trained policy, ready to act: ``load_policy("pong").action_probs(obs)``.

    Args:
        source: a run's ``checkpoint.npz``, a weights file (``pgrl export``), or the short name
            of a shipped policy (``"pong"``).
        backend: ``"numpy"`` or ``"tensorflow"`` (default: the backend it was trained with).

    Returns:
        The policy (obs_dim from its weights), with the dtype and layers of its config. Its
        optimizer state is that of the checkpoint, or fresh for a weights file.

    Raises:
        CheckpointError: no such file or name, a corrupt file, weights that do not fit.
    """
    path, data, cfg = _read_playable(source)
    policy = _policy_of(path, cfg, _obs_dim(data["weights"], path), backend, data["n_actions"])
    restore_policy(policy, data, path, optimizer=bool(data["optimizer_state"]))
    return policy


def _policy_of(path: Path, cfg: Config, obs_dim: int, backend: str | None, n_actions: int):
    """build_policy for the config a file holds; a config that builds no policy names the file."""
    try:
        return build_policy(cfg, obs_dim, backend, n_actions)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _obs_dim(weights: dict, path: Path) -> int:
    """obs_dim of the first-layer weights W1 (obs_dim, H)."""
    first = weights.get("W1")
    if first is None or np.ndim(first) != 2 or first.shape[0] < 1:
        raise CheckpointError(f"{path}: no first-layer weights W1 of shape (obs_dim, H)")
    return int(first.shape[0])


def _embedded_config(text: str, path: Path) -> Config:
    try:
        return from_dict(tomllib.loads(text), f"{path} (embedded config)", stored=True)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt embedded config ({e})") from None


def export_weights(
    checkpoint: str | Path, out: str | Path, dtype: str = "float32", note: str = ""
) -> dict:
    """Write a run's weights (no optimizer state, no RNG) as a compressed weights file.

    The embedded config is the run's, with ``policy.dtype = dtype``. Returns the file's ``info``.
    """
    path, out = Path(checkpoint), Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give the weights file's name")
    if out.exists() and path.exists() and os.path.samefile(out, path):
        raise ConfigError(f"{out}: refusing to overwrite the checkpoint being exported")
    if out.is_file() and not is_weights_file(out):
        raise ConfigError(f"{out}: refusing to overwrite a file that is not a weights file")
    ckpt = load_checkpoint(path)
    cfg = _embedded_config(ckpt["config"], path)
    # the weights must fit the network their config describes
    policy = _policy_of(path, cfg, _obs_dim(ckpt["weights"], path), "numpy", ckpt["n_actions"])
    restore_policy(policy, ckpt, path)
    cfg.policy.dtype = dtype
    weights = {}
    for name, w in ckpt["weights"].items():
        with np.errstate(over="ignore"):
            cast = np.asarray(w).astype(dtype)
        if not np.all(np.isfinite(cast)):
            raise CheckpointError(f"{path}: weights {name!r} overflow {dtype}")
        weights[name] = cast
    facts = ("episodes", "steps", "updates", "wall_time", "running_return")
    info = {"source_backend": ckpt["backend"], **{k: ckpt["state"][k] for k in facts}, "note": note}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stats = None if policy.obs_norm is None else policy.obs_norm.state()
        save_weights(out, weights, cfg.to_toml(), info, policy.head, policy.n_actions, stats)
    except OSError as e:
        raise ConfigError(f"{out}: cannot write ({e})") from None
    return info


def evaluate(
    checkpoint_path: str | Path,
    episodes: int = 10,
    seed: int = 0,
    backend: str | None = None,
    greedy: bool = True,
    gif: str | Path | None = None,
    env_kwargs: dict | None = None,
    progress: bool = False,
) -> dict:
    """Play ``episodes`` episodes with a checkpoint's, weights file's or shipped policy.

    Episode ``k`` starts from ``env.reset(seed=seed + k)``; actions are the most probable ones
    (greedy: ``p > 0.5``; the gaussian head's ``mu``) or sampled from one generator seeded with
    ``seed``.

    Returns:
        dict with ``returns`` (list), ``mean``, ``std``, ``lengths``, ``wins`` (episodes with a
        positive return), ``gif`` (path or None) and ``source`` (the file played).
    """
    if gif is not None:
        gif = _check_gif_target(Path(gif))  # before the episodes are played, not after
    path, data, cfg = _read_playable(checkpoint_path)
    env = _make_env(cfg, dict(cfg.env.make_kwargs(), **(env_kwargs or {})), render=gif is not None)
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        try:
            check_head(cfg, env.action_space)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
        policy = _policy_of(path, cfg, obs_dim, backend, data["n_actions"])
        problem = policy.distribution.check_action_space(env.action_space)
        if problem:  # e.g. other env.actions than the policy was trained with
            raise CheckpointError(f"{path}: {problem}")
        restore_policy(policy, data, path, optimizer=bool(data["optimizer_state"]))
    except BaseException:
        env.close()
        raise
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    returns, lengths, frames = [], [], []
    bar = tqdm(total=episodes, desc=f"eval {path.name}", unit="ep", disable=not progress)
    try:
        for k in range(episodes):
            total, length = play_episode(
                env, policy, seed + k, greedy, rng, frames if gif is not None and k == 0 else None
            )
            returns.append(total)
            lengths.append(length)
            bar.update()
            bar.set_postfix(mean=f"{np.mean(returns):.2f}")
    finally:
        bar.close()
        env.close()
    if gif is not None:
        try:
            _write_gif(frames, gif)
        except ConfigError as e:  # the episodes' results are not lost with the GIF
            raise ConfigError(
                f"{e} (the {episodes} episodes played: returns {returns}, mean "
                f"{np.mean(returns):.2f})"
            ) from None
    return {
        "returns": returns,
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "lengths": lengths,
        "wins": int(sum(r > 0 for r in returns)),
        "gif": str(gif) if gif is not None else None,
        "source": str(path),
    }


def play_episode(env, policy, seed: int, greedy: bool, rng, frames: list | None = None):
    """(return, length) of one episode from ``env.reset(seed=seed)``, its frames into ``frames``."""
    obs, _ = env.reset(seed=seed)
    total, length, done = 0.0, 0, False
    while not done:
        if frames is not None:
            frames.append(env.render())
        dist = policy.distribution
        u = None if greedy else np.array([dist.noise(rng)])
        action = policy.sample(obs[None], u, greedy=greedy)[0]
        if dist.action_shape:  # the gaussian head's: clipped to the env's bounds
            action = env_actions(action, env.action_space)
        else:
            action = int(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        length += 1
        done = terminated or truncated
    return total, length


def _make_env(cfg: Config, kwargs: dict, render: bool):
    from pgrl.envs import make_env

    if render:
        kwargs["render_mode"] = "rgb_array"
    try:
        return make_env(cfg.env.id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"cannot render {cfg.env.id}: {e}") from None
    except (TypeError, ValueError, gym.error.Error) as e:
        raise ConfigError(f"env {cfg.env.id} with env.kwargs {kwargs}: {e}") from None


def _check_gif_target(path: Path) -> Path:
    """``path`` if it is a .gif name in a writable directory."""
    if path.suffix.lower() != ".gif":
        raise ConfigError(f"--gif {path}: give a file name ending in .gif")
    if path.is_dir():
        raise ConfigError(f"--gif {path}: is a directory; give a file name ending in .gif")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise ConfigError(f"--gif {path}: cannot write there ({e.strerror or e})") from None
    try:
        from PIL import Image  # noqa: F401
    except ImportError:
        raise ConfigError("--gif needs Pillow: install pgrl[plot]") from None
    return path


def _write_gif(frames, path: Path) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames[::2]]  # every 2nd frame keeps files small
    save = dict(save_all=True, append_images=images[1:], duration=int(2000 / 30), loop=0)
    try:
        write_atomic(path, lambda f: images[0].save(f, format="GIF", optimize=True, **save))
    except OSError as e:
        raise ConfigError(f"--gif {path}: cannot write it ({e.strerror or e})") from None

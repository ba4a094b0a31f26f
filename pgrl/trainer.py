"""The REINFORCE training loop: collect a batch of episodes, compute advantages, one update.

    from pgrl import load_config, train
    summary = train(load_config("configs/cartpole.toml"), out="runs/cartpole")

A run directory holds ``config.toml`` (resolved), ``metrics.csv`` (one row per episode),
``updates.csv`` (one row per update), ``checkpoint.npz`` and ``summary.json``.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import threading
import time
import tomllib
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np

from pgrl.checkpoint import (
    CheckpointError,
    is_weights_file,
    load_checkpoint,
    load_weights,
    restore_policy,
    save_checkpoint,
    save_weights,
)
from pgrl.config import Config, ConfigError, from_dict
from pgrl.optim import RMSprop
from pgrl.policies import make_policy
from pgrl.returns import discount_rewards, standardize

METRICS_HEADER = [
    "episode",
    "steps",
    "wall_time",
    "return",
    "running_return",
    "mean100",
    "length",
    "update",
]
UPDATES_HEADER = [
    "update",
    "episodes",
    "steps",
    "batch_steps",
    "loss",
    "grad_norm",
    "mean_prob",
    "entropy",
    "rollout_seconds",
    "update_seconds",
]


def compute_advantages(
    rewards: np.ndarray, ep_bounds: np.ndarray, gamma: float, reset_on_nonzero: bool, mode: str
) -> np.ndarray:
    """(T,) advantages: per-episode discounted returns, standardized per episode or per batch."""
    returns = np.empty(len(rewards), dtype=np.float64)
    for start, stop in zip(ep_bounds[:-1], ep_bounds[1:], strict=True):
        g = discount_rewards(rewards[start:stop], gamma, reset_on_nonzero)
        returns[start:stop] = standardize(g) if mode == "episode" else g
    return standardize(returns) if mode == "batch" else returns


def build_policy(cfg: Config, obs_dim: int, backend: str | None = None):
    """The policy a config describes, initialised from ``train.seed``."""
    p, o = cfg.policy, cfg.optimizer
    optimizer = RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt)
    return make_policy(
        backend or p.backend,
        obs_dim=obs_dim,
        hidden_sizes=tuple(p.hidden_sizes),
        optimizer=optimizer,
        seed=cfg.train.seed,
        dtype=p.dtype,
        reduction=p.reduction,
        bias=p.bias,
    )


def _fresh_state() -> dict:
    return {
        "episodes": 0,
        "steps": 0,
        "env_steps": 0,
        "updates": 0,
        "wall_time": 0.0,
        "running_return": None,
        "solved_episode": None,
        "recent_returns": [],
    }


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


class _TensorBoard:
    """Optional tf.summary scalars, one point per update."""

    @staticmethod
    def check_installed() -> None:
        try:
            import tensorboard  # noqa: F401 - TF 2.20+ no longer brings it along
            import tensorflow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "log.tensorboard = true needs TensorFlow and TensorBoard: install pgrl[tf]"
            ) from None

    def __init__(self, logdir: Path):
        self.check_installed()
        import tensorflow as tf

        self.tf = tf
        self.writer = tf.summary.create_file_writer(str(logdir))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                self.tf.summary.scalar(name, value)
        self.writer.flush()


def train(
    cfg: Config,
    out: str | Path | None = None,
    resume: bool = False,
    backend: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a policy as ``cfg`` says; returns the run's summary (also written to summary.json).

    Args:
        cfg: a validated :class:`pgrl.config.Config` (see :func:`pgrl.config.load_config`).
        out: run directory (created); ``runs/<env>-<backend>-seed<k>`` when omitted.
        resume: continue from ``out/checkpoint.npz`` (weights, optimizer, counters, RNG).
        backend: overrides ``cfg.policy.backend`` (a checkpoint of either backend resumes).
        overwrite: start afresh in a directory that already holds a run (otherwise refused,
            so that a forgotten ``--resume`` cannot wipe a run).

    Raises:
        ConfigError, CheckpointError: one-line problems with the config or the checkpoint.
        KeyboardInterrupt: after a checkpoint of the last completed update was written.
    """
    from pgrl.rollout import collect_episodes, make_vector_env

    cfg = copy.deepcopy(cfg)  # the caller's config is left as it was
    if backend is not None:
        cfg.policy.backend = backend
    name = f"{cfg.env.id.split('/')[-1]}-{cfg.policy.backend}-seed{cfg.train.seed}"
    out = Path(out) if out is not None else Path("runs") / name
    ckpt_path = out / "checkpoint.npz"
    metrics_path, updates_path = out / "metrics.csv", out / "updates.csv"
    t = cfg.train

    # Everything that can refuse the run is checked before a file is touched.
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if not resume and not overwrite and (ckpt_path.exists() or metrics_path.exists()):
        raise ConfigError(
            f"--out {out}: already holds a run; add --resume to continue it, or choose another"
        )
    checkpoint, kept = None, ([], [])
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"{ckpt_path}: nothing to resume (no checkpoint in {out})")
        checkpoint = load_checkpoint(ckpt_path)
        kept = (
            _kept_rows(metrics_path, METRICS_HEADER, "episode", checkpoint["state"]["episodes"]),
            _kept_rows(updates_path, UPDATES_HEADER, "update", checkpoint["state"]["updates"]),
        )
    if cfg.log.tensorboard:
        _TensorBoard.check_installed()
    try:
        envs = make_vector_env(
            cfg.env.id,
            cfg.env.num_envs,
            t.seed,
            vectorization=cfg.env.vectorization,
            **cfg.env.kwargs,
        )
    except (TypeError, ValueError, gym.error.Error) as e:
        raise ConfigError(f"env {cfg.env.id} with env.kwargs {cfg.env.kwargs}: {e}") from None
    try:
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        policy = build_policy(cfg, obs_dim)
        rng = np.random.default_rng(t.seed)
        state = _fresh_state()
        if checkpoint is not None:
            restore_policy(policy, checkpoint, ckpt_path)
            state = checkpoint["state"]
            try:
                rng.bit_generator.state = checkpoint["rng_state"]
            except (TypeError, ValueError, KeyError) as e:
                raise CheckpointError(f"{ckpt_path}: unusable RNG state ({e})") from None

        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.toml").write_text(cfg.to_toml())
            _write_csv_atomic(metrics_path, METRICS_HEADER, kept[0])
            _write_csv_atomic(updates_path, UPDATES_HEADER, kept[1])
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot write the run there ({e})") from None
        return _loop(cfg, out, envs, policy, rng, state, collect_episodes)
    finally:
        envs.close()


def _loop(cfg, out, envs, policy, rng, state, collect_episodes) -> dict:
    t = cfg.train
    recent = deque(state["recent_returns"], maxlen=100)
    tb = _TensorBoard(out / "tensorboard") if cfg.log.tensorboard else None
    metrics_file = open(out / "metrics.csv", "a", newline="")
    updates_file = open(out / "updates.csv", "a", newline="")
    metrics, updates = csv.writer(metrics_file), csv.writer(updates_file)
    bar = None
    if cfg.log.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=t.episodes,
            initial=state["episodes"],
            unit="ep",
            dynamic_ncols=True,
            desc=f"{cfg.env.id} {policy.backend}",
        )
    wall_start = time.perf_counter() - state["wall_time"]
    stopped_by = "episodes"

    def checkpoint(rng_state):
        save_checkpoint(
            out / "checkpoint.npz",
            policy,
            {**state, "recent_returns": list(recent)},
            rng_state,
            cfg.to_toml(),
        )

    committed_rng = rng.bit_generator.state  # a batch cut short restarts from here
    hold = _HoldInterrupts()
    try:
        hold.install()
        while True:
            if state["episodes"] >= t.episodes:
                break
            if t.solved_mean100 is not None and state["solved_episode"] is not None:
                stopped_by = "solved"
                break
            if t.max_steps is not None and state["env_steps"] >= t.max_steps:
                stopped_by = "max_steps"
                break
            if t.max_seconds is not None and state["wall_time"] >= t.max_seconds:
                stopped_by = "max_seconds"
                break
            n = min(t.batch_episodes, t.episodes - state["episodes"])
            t0 = time.perf_counter()
            batch = collect_episodes(envs, policy, rng, n)
            t1 = time.perf_counter()
            # Ctrl-C during the update and its bookkeeping is held until they are done, so a
            # checkpoint always pairs weights, counters and RNG state of one and the same update.
            with hold:
                advantages = compute_advantages(
                    batch.rewards, batch.ep_bounds, t.gamma, t.reset_on_nonzero, t.standardize
                )
                stats = policy.update(batch.obs, batch.actions, advantages)
                t2 = time.perf_counter()

                state["updates"] += 1
                state["env_steps"] += batch.env_steps
                state["wall_time"] = t2 - wall_start
                for ep_return, length in zip(batch.ep_returns, batch.ep_lengths, strict=True):
                    ep_return = float(ep_return)
                    state["episodes"] += 1
                    state["steps"] += int(length)
                    recent.append(ep_return)
                    rr = state["running_return"]
                    # Karpathy's running reward: 0.99 * old + 0.01 * new, starting from the first
                    state["running_return"] = (
                        ep_return if rr is None else 0.99 * rr + 0.01 * ep_return
                    )
                    mean100 = float(np.mean(recent))
                    if (
                        t.solved_mean100 is not None
                        and state["solved_episode"] is None
                        and len(recent) == 100
                        and mean100 >= t.solved_mean100
                    ):
                        state["solved_episode"] = state["episodes"]
                    metrics.writerow(
                        [
                            state["episodes"],
                            state["steps"],
                            f"{state['wall_time']:.3f}",
                            repr(ep_return),
                            repr(state["running_return"]),
                            repr(mean100),
                            int(length),
                            state["updates"],
                        ]
                    )
                updates.writerow(
                    [
                        state["updates"],
                        state["episodes"],
                        state["steps"],
                        batch.steps,
                        *(repr(stats[k]) for k in ("loss", "grad_norm", "mean_prob", "entropy")),
                        f"{t1 - t0:.4f}",
                        f"{t2 - t1:.4f}",
                    ]
                )
                metrics_file.flush()
                updates_file.flush()
                if tb is not None:
                    tb.write(
                        state["updates"],
                        {
                            **stats,
                            "running_return": state["running_return"],
                            "mean100": float(np.mean(recent)),
                        },
                    )
                if state["updates"] % t.checkpoint_every == 0:
                    checkpoint(rng.bit_generator.state)
                if bar is not None:
                    sps = state["env_steps"] / max(state["wall_time"], 1e-9)
                    bar.update(len(batch.ep_returns))
                    bar.set_postfix(
                        running=f"{state['running_return']:.2f}",
                        mean100=f"{float(np.mean(recent)):.1f}",
                        sps=f"{sps:.0f}",
                        refresh=False,
                    )
                committed_rng = rng.bit_generator.state
    except KeyboardInterrupt:
        # Stop cleanly: the partial batch is dropped, the checkpoint is that of the last update.
        checkpoint(committed_rng)
        _write_summary(out, policy, cfg, state, recent, "interrupted")
        raise
    finally:
        hold.uninstall()
        metrics_file.close()
        updates_file.close()
        if bar is not None:
            bar.close()
    checkpoint(rng.bit_generator.state)
    return _write_summary(out, policy, cfg, state, recent, stopped_by)


class _HoldInterrupts:
    """Inside ``with hold:``, SIGINT is held and raised as KeyboardInterrupt when the block ends;
    outside, it raises at once (the default). Only the main thread can own signal handlers."""

    def __init__(self):
        self.inside = False
        self.pending = False
        self.previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handler(self, signum, frame):
        if self.inside:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self):
        self.inside = True
        return self

    def __exit__(self, exc_type, exc, tb):
        self.inside = False
        if self.pending and exc_type is None:
            self.pending = False
            raise KeyboardInterrupt


def _write_summary(out, policy, cfg, state, recent, stopped_by) -> dict:
    wall = state["wall_time"]
    summary = {
        "backend": policy.backend,
        "seed": cfg.train.seed,
        "env": cfg.env.id,
        "episodes": state["episodes"],
        "steps": state["steps"],
        "env_steps": state["env_steps"],
        "updates": state["updates"],
        "wall_time": round(wall, 3),
        "steps_per_second": round(state["env_steps"] / wall, 1) if wall > 0 else 0.0,
        "solved": state["solved_episode"] is not None,
        "solved_episode": state["solved_episode"],
        "final_running_return": state["running_return"],
        "mean100": float(np.mean(recent)) if recent else None,
        "stopped_by": stopped_by,
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "summary.json")
    return summary


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
    """A trained policy, ready to act: ``load_policy("pong").action_prob(obs)``.

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
    policy = build_policy(cfg, _obs_dim(data["weights"], path), backend)
    restore_policy(policy, data, path, optimizer=bool(data["optimizer_state"]))
    return policy


def _obs_dim(weights: dict, path: Path) -> int:
    """The observation width that the first-layer weights W1 (obs_dim, H) take."""
    first = weights.get("W1")
    if first is None or np.ndim(first) != 2 or first.shape[0] < 1:
        raise CheckpointError(f"{path}: no first-layer weights W1 of shape (obs_dim, H)")
    return int(first.shape[0])


def _embedded_config(text: str, path: Path) -> Config:
    try:
        return from_dict(tomllib.loads(text), f"{path} (embedded config)")
    except tomllib.TOMLDecodeError as e:
        raise CheckpointError(f"{path}: corrupt embedded config ({e})") from None


def export_weights(
    checkpoint: str | Path, out: str | Path, dtype: str = "float32", note: str = ""
) -> dict:
    """Write a run's weights (no optimizer state, no RNG) as a compressed weights file.

    The embedded config is the run's, with ``policy.dtype = dtype``. Returns the file's ``info``.
    """
    path = Path(checkpoint)
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give the weights file's name")
    if out.exists() and path.exists() and os.path.samefile(out, path):
        raise ConfigError(f"{out}: refusing to overwrite the checkpoint being exported")
    if out.is_file() and not is_weights_file(out):
        raise ConfigError(f"{out}: refusing to overwrite a file that is not a weights file")
    ckpt = load_checkpoint(path)
    cfg = _embedded_config(ckpt["config"], path)
    # the weights must fit the network their config describes
    restore_policy(build_policy(cfg, _obs_dim(ckpt["weights"], path), "numpy"), ckpt, path)
    cfg.policy.dtype = dtype
    weights = {}
    for name, w in ckpt["weights"].items():
        with np.errstate(over="ignore"):
            cast = np.asarray(w).astype(dtype)
        if not np.all(np.isfinite(cast)):
            raise CheckpointError(f"{path}: weights {name!r} overflow {dtype}")
        weights[name] = cast
    state = ckpt["state"]
    info = {
        "source_backend": ckpt["backend"],
        **{k: state[k] for k in ("episodes", "steps", "updates", "wall_time", "running_return")},
        "note": note,
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_weights(out, weights, cfg.to_toml(), info)
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

    Episode ``k`` starts from ``env.reset(seed=seed + k)``; actions are ``p > 0.5`` (greedy) or
    sampled from one generator seeded with ``seed``.

    Returns:
        dict with ``returns`` (list), ``mean``, ``std``, ``lengths``, ``wins`` (episodes with a
        positive return), ``gif`` (path or None) and ``source`` (the file played).
    """
    from pgrl.envs import make_env

    path, data, cfg = _read_playable(checkpoint_path)
    kwargs = dict(cfg.env.kwargs, **(env_kwargs or {}))
    if gif is not None:
        kwargs["render_mode"] = "rgb_array"
    try:
        env = make_env(cfg.env.id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"cannot render {cfg.env.id}: {e}") from None
    except (TypeError, ValueError, gym.error.Error) as e:
        raise ConfigError(f"env {cfg.env.id} with env.kwargs {kwargs}: {e}") from None
    policy = build_policy(cfg, int(np.prod(env.observation_space.shape)), backend)
    restore_policy(policy, data, path, optimizer=bool(data["optimizer_state"]))
    from tqdm.auto import tqdm

    from pgrl.rollout import batch_action_prob

    # the weights are fixed: the rollout's function (TF: eager ops, ~2x faster than a traced call)
    action_prob = batch_action_prob(policy, env.observation_space)
    rng = np.random.default_rng(seed)
    returns, lengths, frames = [], [], []
    bar = tqdm(total=episodes, desc=f"eval {path.name}", unit="ep", disable=not progress)
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            total, length, done = 0.0, 0, False
            while not done:
                if gif is not None and k == 0:
                    frames.append(env.render())
                p = float(action_prob(obs[None])[0])
                action = int(p > 0.5) if greedy else int(rng.random() < p)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
            bar.update()
            bar.set_postfix(mean=f"{np.mean(returns):.2f}")
    finally:
        bar.close()
        env.close()
    if gif is not None:
        _write_gif(frames, Path(gif))
    return {
        "returns": returns,
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "lengths": lengths,
        "wins": int(sum(r > 0 for r in returns)),
        "gif": str(gif) if gif is not None else None,
        "source": str(path),
    }


def _write_gif(frames, path: Path, fps: int = 30) -> None:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("--gif needs Pillow: install pgrl[plot]") from None
    images = [Image.fromarray(f) for f in frames[::2]]  # every 2nd frame keeps files small
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=int(2000 / fps),
        loop=0,
        optimize=True,
    )

"""What a config builds: its envs, its policy and its value network.

The checks that need an env or a backend happen here (gymnasium's registry, the head against the
env's actions, the network against this machine's memory), each a one-line ConfigError.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os

import gymnasium as gym
import numpy as np

from pgrl import envs
from pgrl import validate as valid
from pgrl.config import Config, ConfigError, EnvConfig
from pgrl.distributions import make_distribution
from pgrl.envs import make_env
from pgrl.normalize import ObsNormalizer
from pgrl.optim import RMSprop
from pgrl.policies import Policy, ValueNet, make_policy, make_value_net
from pgrl.rollout import CHUNK_ROWS, make_vector_env


@contextlib.contextmanager
def _env_errors(e: EnvConfig):
    """An env the config cannot make (unknown id, bad kwargs, a missing package) as one
    ConfigError line, of bounded length (gymnasium's messages repeat the kwargs)."""
    try:
        yield
    except (TypeError, ValueError, ImportError, gym.error.Error) as err:
        raise ConfigError(
            f"env {valid.shorten(e.id, 100)} with env.kwargs {valid.cut(e.kwargs)}: "
            f"{valid.shorten(err, 400)}"
        ) from None


def check_env_id(cfg: Config) -> None:
    """ConfigError unless pgrl can make the config's env (its id, ``env.kwargs`` and spaces,
    made once) and its ``policy.head`` plays the env's actions, before any run starts. An Atari
    env whose package is not installed here is checked by id only: rollout workers elsewhere may
    have it."""
    with _env_errors(cfg.env):
        envs.check_env_id(cfg.env.id)
    if cfg.env.id.startswith("ALE/") and importlib.util.find_spec("ale_py") is None:
        return
    check_head(cfg, env_spaces(cfg)[1])


def make_envs(cfg: Config, num_envs: int | None = None) -> gym.vector.VectorEnv:
    """The config's vector env: ``num_envs`` copies (default ``env.num_envs``), seeded from
    ``train.seed``; refused before any copy is made when their rollout buffers alone would not
    fit in memory."""
    e = cfg.env
    n = e.num_envs if num_envs is None else num_envs
    check_env_memory(cfg, "env.num_envs", n)
    with _env_errors(e):
        return make_vector_env(e.id, n, cfg.train.seed, **e.make_kwargs())


def check_env_memory(cfg: Config, key: str, n: int) -> None:
    """ConfigError if ``n`` env copies' rollout buffers alone would not fit in memory."""
    space = env_spaces(cfg)[0]
    per_env = CHUNK_ROWS * int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
    if n * per_env > _memory_bytes():
        raise ConfigError(
            f"{key} {n:,}: their rollout buffers alone take {n * per_env / 2**30:,.0f} GiB, "
            "more than this machine's memory holds"
        )


def env_spaces(cfg: Config) -> tuple[gym.Space, gym.Space]:
    """``(observation_space, action_space)`` of one env of the config (made, then closed)."""
    with _env_errors(cfg.env):
        env = make_env(cfg.env.id, **cfg.env.make_kwargs())
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def action_size(space: gym.Space) -> int | None:
    """The size of the head that plays ``space``: ``n`` of ``Discrete(n)`` actions, ``d`` of
    ``Box(d,)`` ones; None for any other space."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    return None


def env_actions(envs, cfg: Config) -> int:
    """The :func:`action_size` of a vector env's (or rollout workers') actions, after
    :func:`check_head`."""
    space = envs.single_action_space
    check_head(cfg, space)
    return action_size(space)


def check_head(cfg: Config, space: gym.Space) -> None:
    """ConfigError unless ``policy.head`` plays the action space ``space`` of ``env.id``."""
    try:
        dist = make_distribution(cfg.policy.head, action_size(space))
    except ValueError:  # a size this head cannot have (or none): its space says why
        dist = make_distribution(cfg.policy.head, 2)
    problem = dist.check_action_space(space)
    if problem:
        raise ConfigError(f"policy.head = {cfg.policy.head!r} does not fit {cfg.env.id}: {problem}")


def build_policy(
    cfg: Config, obs_dim: int, backend: str | None = None, n_actions: int = 2
) -> Policy:
    """The config's policy for ``n_actions`` actions, initialised from ``train.seed``."""
    p, o = cfg.policy, cfg.optimizer
    try:
        n_outputs = make_distribution(p.head, n_actions).n_outputs
    except ValueError as e:
        raise ConfigError(f"policy.head = {p.head!r} does not fit {cfg.env.id}: {e}") from None
    n_weights = sum(a * b for a, b in itertools.pairwise([obs_dim, *p.hidden_sizes, n_outputs]))
    # at least: the float64 draw, the weights, RMSprop's averages, the gradients and a copy (the
    # TensorFlow backend's snapshot), and the hidden activations of one step of every env copy
    need = 8 * (5 * n_weights + cfg.env.num_envs * sum(p.hidden_sizes))
    if need > _memory_bytes():
        raise ConfigError(
            f"policy.hidden_sizes {p.hidden_sizes}: {n_weights:,} weights, at least "
            f"{need / 2**30:,.1f} GiB to train, more than this machine's memory holds"
        )
    policy = make_policy(
        backend or p.backend,
        obs_dim=obs_dim,
        hidden_sizes=tuple(p.hidden_sizes),
        optimizer=RMSprop(o.learning_rate, o.decay, o.epsilon, o.epsilon_inside_sqrt),
        seed=cfg.train.seed,
        dtype=p.dtype,
        reduction=p.reduction,
        bias=p.bias,
        head=p.head,
        n_actions=n_actions,
        init_log_std=p.init_log_std,
        entropy_coef=o.entropy_coef,
        max_grad_norm=o.max_grad_norm,
    )
    if cfg.env.normalize_obs:
        policy.obs_norm = ObsNormalizer(obs_dim)
    return policy


def build_value_net(
    cfg: Config, obs_dim: int, backend: str | None = None, policy: Policy | None = None
) -> ValueNet:
    """The ``[value]`` section's network, in the policy's backend, dtype and reduction; it
    shares ``policy``'s observation statistics (``env.normalize_obs``)."""
    v = cfg.value
    value = make_value_net(
        backend or cfg.policy.backend,
        obs_dim=obs_dim,
        hidden_sizes=tuple(v.hidden_sizes),
        optimizer=RMSprop(v.learning_rate, v.decay, v.epsilon, v.epsilon_inside_sqrt),
        seed=cfg.train.seed,
        dtype=cfg.policy.dtype,
        reduction=cfg.policy.reduction,
        bias=v.bias,
        max_grad_norm=v.max_grad_norm,
    )
    value.obs_norm = None if policy is None else policy.obs_norm
    return value


def _memory_bytes() -> int:
    """This machine's physical memory (a large number where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62

"""Run configuration: typed dataclasses loaded from TOML, with ``--set section.key=value``.

Data only: loading a config imports no env and no backend. Every mistake raises
:class:`ConfigError` with one line naming the file and the key. What needs an env or a backend
(gymnasium's registry, the env's actions) is checked where those are built (:mod:`pgrl.build`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import numbers
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from pgrl import validate as valid
from pgrl.distributions import HEADS
from pgrl.validate import ALGORITHMS, BASELINES, RUNNERS, STANDARDIZE
from pgrl.validate import cut as _cut

# The lowest return an episode can have: a goal at or below it is met at once (CartPole: +1 per
# step; Pong: a game to 21, -1 per point lost; Acrobot: -1 per step, at most 500).
LOWEST_RETURNS = {"CartPole-v1": 1.0, "ALE/Pong-v5": -21.0, "Acrobot-v1": -500.0}


class ConfigError(ValueError):
    """A configuration mistake, reported as one line."""


def _key(default, check=None):
    """A field with its default (lists and dicts copied per config) and ``check(name, value)``."""
    if isinstance(default, list | dict):
        return field(default_factory=default.copy, metadata={"check": check})
    return field(default=default, metadata={"check": check})


def _one_of(choices):
    return partial(valid.choice, choices=choices)


_AT_LEAST_1 = valid.rule(lambda n: n >= 1, ">= 1")
_SIZES = valid.rule(lambda sizes: all(h >= 1 for h in sizes), "a list of sizes >= 1")


@dataclass
class EnvConfig:
    """The environment: ``id`` one of pgrl.validate.SUPPORTED_ENV_IDS or another registered
    gymnasium env with Discrete(n) actions and flat observations, on ``num_envs`` copies (env
    slots), or with ``runner = "ray"`` on ``num_workers * envs_per_worker`` slots of Ray actors."""

    id: str = _key("CartPole-v1", valid.env_id)
    num_envs: int = _key(1, _AT_LEAST_1)
    # "local": the envs run here; "ray": rollout workers as Ray actors (pgrl.ray_runner)
    runner: str = _key("local", _one_of(RUNNERS))
    num_workers: int = _key(1, _AT_LEAST_1)  # runner = "ray": rollout workers, one CPU each
    envs_per_worker: int = _key(1, _AT_LEAST_1)  # runner = "ray": env copies per worker
    # passed to gymnasium.make, e.g. {frameskip = 4, repeat_action_probability = 0.25}
    kwargs: dict[str, Any] = _key({})
    # Pong only: ALE action names, e.g. ["NOOP", "UP", "DOWN"] for the categorical head;
    # empty: Karpathy's two actions (1 = UP, 0 = DOWN)
    actions: list[str] = _key([])
    # observations standardized by their running mean and variance (as Stable-Baselines3's
    # VecNormalize), updated after every batch; the statistics are saved with the weights
    normalize_obs: bool = False

    def make_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of pgrl.envs.make_env for this env: ``kwargs`` and ``actions``."""
        return {**self.kwargs, "actions": self.actions} if self.actions else dict(self.kwargs)


@dataclass
class PolicyConfig:
    """The network and its backend (see pgrl.policies.base.Policy)."""

    backend: str = _key("numpy", _one_of(valid.BACKENDS))
    hidden_sizes: list[int] = _key([200], _SIZES)
    dtype: str = _key("float64", _one_of(valid.DTYPES))
    bias: bool = False
    reduction: str = _key("sum", _one_of(valid.REDUCTIONS))
    # "bernoulli": one logit, P(action = 1) (Karpathy's; Discrete(2) envs only);
    # "categorical": one logit per action of the env's Discrete(n), softmax;
    # "gaussian": a mean per dimension of the env's Box(d,) actions and a learned log_std
    head: str = _key("bernoulli", _one_of(HEADS))
    # the gaussian head's initial log_std, every dimension
    init_log_std: float = _key(0.0, valid.rule(lambda v: abs(v) <= 20, "in [-20, 20]"))


@dataclass
class OptimizerConfig:
    """RMSprop (see pgrl.optim.RMSprop); defaults are Karpathy's."""

    learning_rate: float = _key(1e-4, valid.learning_rate)
    decay: float = _key(0.99, valid.decay)
    epsilon: float = _key(1e-5, valid.epsilon)
    epsilon_inside_sqrt: bool = False
    # the policy loss gains -entropy_coef * sum_t H(pi(. | s_t)); 0: no entropy bonus
    entropy_coef: float = _key(0.0, valid.entropy_coef)
    # scale the policy's gradients to at most this global L2 norm before RMSprop; absent: never
    max_grad_norm: float | None = _key(None, valid.max_grad_norm)


@dataclass
class ValueConfig:
    """The value network V(s) of ``train.baseline = "value"`` (see pgrl.policies.base.ValueNet):
    its own MLP (same backend and dtype as the policy) and its own RMSprop."""

    hidden_sizes: list[int] = _key([64], _SIZES)
    bias: bool = True
    learning_rate: float = _key(1e-3, valid.learning_rate)
    decay: float = _key(0.99, valid.decay)
    epsilon: float = _key(1e-5, valid.epsilon)
    epsilon_inside_sqrt: bool = False
    max_grad_norm: float | None = _key(None, valid.max_grad_norm)
    steps: int = _key(1, _AT_LEAST_1)  # RMSprop steps on each batch's returns, per update
    # an episode cut by a time limit (truncated, not terminated) has its returns continue with
    # gamma * V(s_T) of the state it was cut at, not as if the env had ended there
    bootstrap: bool = True


@dataclass
class PPOConfig:
    """PPO's update of ``train.algorithm = "ppo"`` (see pgrl.reinforce.ppo_update): GAE(lambda)
    advantages, then ``epochs`` passes over the batch in shuffled minibatches, each one step of
    the clipped surrogate and one of the value fit."""

    clip: float = _key(0.2, valid.clip)  # the ratio pi / pi_old is kept in [1 - clip, 1 + clip]
    epochs: int = _key(10, _AT_LEAST_1)  # passes over each batch
    minibatch_size: int = _key(64, _AT_LEAST_1)  # steps per minibatch (the last may be smaller)
    gae_lambda: float = _key(0.95, valid.fraction)  # 1: returns minus V; 0: one-step TD errors
    normalize_advantages: bool = True  # standardize the advantages of each minibatch
    # stop the batch's epochs after a minibatch whose approximate KL(pi_old || pi) exceeds this
    target_kl: float | None = _key(None, valid.rule(lambda x: 0 < x < math.inf, "> 0"))
    # keep V within this distance of the values the batch was collected with (clipped fit)
    clip_value: float | None = _key(None, valid.rule(lambda x: 0 < x < math.inf, "> 0"))


@dataclass
class TrainConfig:
    """The training loop: budgets, returns and advantages, stopping, checkpoints."""

    seed: int = _key(0, valid.rule(lambda n: n >= 0, ">= 0"))
    # "reinforce": one step per batch (Karpathy's); "ppo": the [ppo] section's clipped updates
    algorithm: str = _key("reinforce", _one_of(ALGORITHMS))
    episodes: int = _key(1000, _AT_LEAST_1)  # episode budget
    batch_episodes: int = _key(10, _AT_LEAST_1)  # complete episodes per update (Karpathy: 10)
    gamma: float = _key(0.99, valid.rule(lambda g: 0 < g <= 1, "in (0, 1]"))
    reset_on_nonzero: bool = False  # Pong: restart discounted sums at every point
    # advantages: per episode (Karpathy), per batch, or none
    standardize: str = _key("episode", _one_of(STANDARDIZE))
    # "none": advantages are the returns (Karpathy); "value": returns - V(s) of a value network
    # fit to the returns (the [value] section)
    baseline: str = _key("none", _one_of(BASELINES))
    # stop once mean100 reaches this (475 for CartPole-v1); above the env's lowest return
    solved_mean100: float | None = _key(None, valid.rule(math.isfinite, "a finite number"))
    max_steps: int | None = _key(None, _AT_LEAST_1)  # env step budget
    # wall-clock budget, seconds
    max_seconds: float | None = _key(None, valid.rule(lambda s: 0 < s < math.inf, "> 0"))
    checkpoint_every: int = _key(10, _AT_LEAST_1)  # updates between checkpoints (and at the end)
    # start the policy from these weights (a weights file or a run's checkpoint.npz, whose
    # RMSprop state comes too) instead of train.seed's random init; read once, at the start.
    # A value network (train.baseline = "value") starts from train.seed as usual
    init: str | None = _key(
        None,
        valid.rule(str.strip, "a path to a weights file or checkpoint (leave it out for none)"),
    )


@dataclass
class LogConfig:
    """What a run reports besides metrics.csv and updates.csv."""

    progress: bool = True  # tqdm bar
    tensorboard: bool = False  # scalars per update in OUT/tensorboard (pgrl[tensorboard])


@dataclass
class Config:
    """A whole run: one dataclass per TOML section."""

    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self, where: str = "config") -> Config:
        """This config, checked as a TOML file is and stored as TOML gives it (ints for floats as
        floats, tuples as lists); ConfigError naming ``where`` and the first bad key."""
        for section, cls in SECTIONS.items():
            values = getattr(self, section)
            if not isinstance(values, cls):
                raise ConfigError(
                    f"{where}: '{section}' must be a {cls.__name__}, got {_cut(values)}"
                )
            for f in dataclasses.fields(cls):
                key = f"{section}.{f.name}"
                value = _coerce(getattr(values, f.name), _FIELD_TYPES[section][f.name], key, where)
                setattr(values, f.name, value)
                if f.metadata.get("check") is not None and value is not None:
                    try:
                        f.metadata["check"](f"'{key}'", value)
                    except ValueError as e:
                        raise ConfigError(f"{where}: {e}") from None
        _check_together(self, where)
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The resolved config as TOML (None values are left out: they mean "no limit")."""
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


def _check_together(cfg: Config, where: str) -> None:
    """Checks across keys: Pong's actions, the head that plays them, a goal the env can miss."""
    e, t = cfg.env, cfg.train
    try:
        if "actions" in e.kwargs:
            raise ValueError("give the actions as env.actions, not env.kwargs")
        actions = valid.pong_actions(e.id, e.actions)
    except ValueError as err:
        raise ConfigError(f"{where}: 'env.actions': {err}") from None
    if actions is not None and cfg.policy.head == "bernoulli" and len(actions) != 2:
        raise ConfigError(
            f"{where}: policy.head = 'bernoulli' needs 2 actions, but env.actions has "
            f"{len(actions)} ({', '.join(e.actions)}); set policy.head = 'categorical'"
        )
    if cfg.policy.init_log_std and cfg.policy.head != "gaussian":
        raise ConfigError(
            f"{where}: policy.init_log_std is the gaussian head's; policy.head is "
            f"{cfg.policy.head!r}"
        )
    if e.normalize_obs and e.id.startswith("ALE/"):
        raise ConfigError(
            f"{where}: env.normalize_obs is for small float observations; {e.id}'s are "
            "frame differences in {-1, 0, 1}"
        )
    if t.algorithm == "ppo" and t.baseline != "value":
        raise ConfigError(
            f"{where}: train.algorithm = 'ppo' needs a value network for its GAE advantages; "
            "set train.baseline = 'value'"
        )
    low = LOWEST_RETURNS.get(e.id, -math.inf)
    if t.solved_mean100 is not None and t.solved_mean100 <= low:
        raise ConfigError(
            f"{where}: 'train.solved_mean100' must be above {e.id}'s lowest return, {low:g}, "
            f"got {_cut(t.solved_mean100)}"
        )


def _toml_value(value) -> str:
    """``value`` as a TOML value: Python's and NumPy's scalars, arrays, lists and tuples, dicts."""
    if hasattr(value, "tolist") and not isinstance(value, list | dict):
        value = value.tolist()  # NumPy scalars and arrays: Python's bool, int, float, str, list
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, float):
        return repr(float(value))  # TOML spells inf, -inf and nan as Python does
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {_cut(value)} as TOML")


# TOML's short escapes; other control characters are written \uXXXX
_TOML_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = (
        _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
        for c in text
    )
    return '"' + "".join(out) + '"'


def _toml_key(key) -> str:
    """A table key: bare where TOML allows it (A-Z a-z 0-9 _ -), else quoted."""
    key = str(key)
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _toml_string(key)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)
# section -> {key: annotation}, e.g. "train" -> {"seed": int, ...}
_FIELD_TYPES = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}


def _unknown(key: str, where: str) -> ConfigError:
    keys = [*SECTIONS, *(f"{s}.{k}" for s, keys in _FIELD_TYPES.items() for k in keys)]
    hint = _did_you_mean(key, keys) if len(key) < 100 else ""
    return ConfigError(f"{where}: unknown key {_cut(key)}{hint}")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# annotation -> the values a field of it takes (bools only where bools are meant)
_TAKES = {bool: bool, int: numbers.Integral, float: numbers.Real, str: str}


def _coerce(value, annotation, key: str, where: str):
    """``value`` as a field of type ``annotation`` holds it (ints for floats, tuples for lists),
    or ConfigError naming ``key``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # X | None
        return None if value is None else _coerce(value, args[0], key, where)
    if annotation in _TAKES:
        name = annotation.__name__
        takes = isinstance(value, _TAKES[annotation])
        if takes and isinstance(value, bool) == (annotation is bool):
            return annotation(value)
    elif origin is list:
        name = f"list of {args[0].__name__}"
        if isinstance(value, list | tuple):
            with contextlib.suppress(ConfigError):  # reported below, with the whole list
                return [_coerce(v, args[0], key, where) for v in value]
    else:  # dict[str, Any]
        name = "table"
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    raise ConfigError(f"{where}: '{key}' must be {name}, got {_cut(value)}")


# keys pgrl no longer has -> what to do instead
REMOVED_KEYS = {
    "env.vectorization": (
        "every runner steps its envs in its own process; for several cores use env.runner = "
        '"processes" with env.num_workers (Pong: 2 on 2 cores)'
    ),
}


def from_dict(data: dict, where: str = "config", stored: bool = False) -> Config:
    """Build and validate a Config from nested dicts ``{section: {key: value}}``. A key pgrl
    no longer has is an error with a hint, or, in a config a run stored (``stored``), ignored."""
    cfg = Config()
    for section, values in data.items():
        if section not in SECTIONS:
            raise _unknown(section, where)
        if not isinstance(values, dict):
            raise ConfigError(
                f"{where}: '{section}' must be a table [{section}], got {_cut(values)}"
            )
        target = getattr(cfg, section)
        for key, value in values.items():
            if f"{section}.{key}" in REMOVED_KEYS:
                if stored:
                    continue
                hint = REMOVED_KEYS[f"{section}.{key}"]
                raise ConfigError(f"{where}: {section}.{key} is no longer a key: {hint}")
            if key not in _FIELD_TYPES[section]:
                raise _unknown(f"{section}.{key}", where)
            setattr(target, key, value)
    return cfg.validate(where)


# the flags that take section.key=... and the form they expect
_OVERRIDE_FORMS = {
    "--set": "section.key=value, e.g. train.seed=3",
    "--grid": "section.key=v1,v2,..., e.g. optimizer.learning_rate=3e-3,1e-2",
}


def parse_override(text: str, flag: str = "--set") -> tuple[str, str, Any]:
    """``"train.seed=3"`` -> ("train", "seed", 3); the value is read as TOML, else as a string.
    Errors name ``flag``, the option the text came from."""
    path, _, raw = text.partition("=")
    section, _, key = path.strip().partition(".")
    if "=" not in text or not section.strip() or not key.strip():
        raise ConfigError(f"{flag} {_cut(text)}: expected {_OVERRIDE_FORMS[flag]}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except ValueError:  # TOMLDecodeError, or an int of 4,300+ digits
        value = raw.strip()  # bare words: backend=tensorflow
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError(f"{flag} {_cut(text)}: value nested too deeply") from None
    return section, key, value


def _shipped_dir():
    return resources.files("pgrl").joinpath("configs")


def shipped_configs() -> list[str]:
    """Names of the configs shipped with pgrl (``pgrl/configs/<name>.toml``), sorted."""
    folder = _shipped_dir()
    if not folder.is_dir():
        return []
    files = (f for f in folder.iterdir() if f.name.endswith(".toml") and f.is_file())
    return sorted(f.name[: -len(".toml")] for f in files)


# stat test -> what the file is, for configs that exist but are no regular file
_FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def config_path(config: str | Path) -> Path:
    """An existing file as given, else the shipped config a bare name (``"cartpole"``,
    ``"pong.toml"``, never a path) stands for; ConfigError listing the shipped names."""
    path = Path(config)
    if path.is_file():
        return path
    text = str(config)
    names = shipped_configs()
    name = text.removesuffix(".toml")
    if text and path.name == text and name in names:
        return Path(str(_shipped_dir().joinpath(f"{name}.toml")))
    if text and path.is_dir():
        raise ConfigError(f"{text}: is a directory, not a config file")
    if text and path.exists():
        mode = path.stat().st_mode
        kind = next((kind for test, kind in _FILE_KINDS if test(mode)), "a special file")
        raise ConfigError(f"{text}: is {kind}, not a config file")
    hint = _did_you_mean(path.stem.lower(), names)
    what = "config file or shipped config name" if path.name == text else "config file"
    raise ConfigError(f"{text}: no such {what}{hint}; shipped configs: {', '.join(names)}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (defaults when ``path`` is None), then ``section.key=value`` overrides.

    Args:
        path: a TOML file, or the name of a shipped config (``"cartpole"``; see
            :func:`config_path`). Messages name it as given.
        overrides: ``"section.key=value"`` strings, applied in order (``--set``).

    Raises:
        ConfigError: with one line naming the file and the key.
    """
    data: dict[str, dict] = {}
    where = "config"
    if path is not None:
        where = str(path)
        file = config_path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:  # a ValueError too: caught first
            raise ConfigError(f"{where}: not a text (TOML) file") from None
        except ValueError as e:  # TOMLDecodeError, or an int of 4,300+ digits
            raise ConfigError(f"{where}: TOML syntax error: {str(e)[:200]}") from None
        except OSError as e:
            raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from None
        except RecursionError:  # tomllib recurses once per level of nesting
            raise ConfigError(f"{where}: TOML nested too deeply to read") from None
    for text in overrides or []:
        section, key, value = parse_override(text)
        data.setdefault(section, {})
        if not isinstance(data[section], dict):  # the file's [[section]] or section = value
            raise ConfigError(
                f"{where}: '{section}' must be a table [{section}], got {_cut(data[section])}"
            )
        data[section][key] = value
    return from_dict(data, where)

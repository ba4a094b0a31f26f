"""Run configuration: typed dataclasses loaded from TOML, with ``--set section.key=value``.

One source of truth for every knob of a run. Every mistake (unknown key, wrong type, value out of
range, missing file, TOML syntax error) raises :class:`ConfigError` with one line naming the file
and the key; the command line turns it into exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgrl.policies import BACKENDS
from pgrl.policies.base import DTYPES, REDUCTIONS

ENV_IDS = ("CartPole-v1", "ALE/Pong-v5")
STANDARDIZE = ("episode", "batch", "none")
VECTORIZATIONS = ("auto", "sync", "workers", "async")


class ConfigError(ValueError):
    """A configuration mistake, reported as one line."""


@dataclass
class EnvConfig:
    """The environment: ``id`` one of ENV_IDS, played on ``num_envs`` parallel copies."""

    id: str = "CartPole-v1"
    num_envs: int = 1
    # "sync": all copies in this process (cheap envs); "workers": a process each (Atari);
    # "async": a process each, through gymnasium's slower AsyncVectorEnv;
    # "auto": sync for CartPole, workers for Pong
    vectorization: str = "auto"
    # passed to gymnasium.make, e.g. {frameskip = 4, repeat_action_probability = 0.25}
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicyConfig:
    """The network and its backend (see pgrl.policies.base.Policy)."""

    backend: str = "numpy"
    hidden_sizes: list[int] = field(default_factory=lambda: [200])
    dtype: str = "float64"
    bias: bool = False
    reduction: str = "sum"


@dataclass
class OptimizerConfig:
    """RMSprop (see pgrl.optim.RMSprop); defaults are Karpathy's."""

    learning_rate: float = 1e-4
    decay: float = 0.99
    epsilon: float = 1e-5
    epsilon_inside_sqrt: bool = False


@dataclass
class TrainConfig:
    """The REINFORCE loop: budgets, returns and advantages, stopping, checkpoints."""

    seed: int = 0
    episodes: int = 1000  # episode budget
    batch_episodes: int = 10  # complete episodes per update (Karpathy: 10)
    gamma: float = 0.99
    reset_on_nonzero: bool = False  # Pong: restart discounted sums at every point
    standardize: str = "episode"  # advantages: per episode (Karpathy), per batch, or none
    solved_mean100: float | None = None  # stop once mean100 reaches this (475 for CartPole-v1)
    max_steps: int | None = None  # env step budget
    max_seconds: float | None = None  # wall-clock budget
    checkpoint_every: int = 10  # updates between checkpoints (and one at the end)


@dataclass
class LogConfig:
    """What a run reports besides metrics.csv and updates.csv."""

    progress: bool = True  # tqdm bar
    tensorboard: bool = False  # tf.summary scalars in OUT/tensorboard (needs TensorFlow)


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

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


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _section_class(name: str):
    return {
        "env": EnvConfig,
        "policy": PolicyConfig,
        "optimizer": OptimizerConfig,
        "train": TrainConfig,
        "log": LogConfig,
    }[name]


def _all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(_section_class(s))]


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys() + list(SECTIONS), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _coerce(value, annotation, key: str, where: str):
    """Check ``value`` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, list):
            return [_coerce(v, item, key, where) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    name = getattr(annotation, "__name__", str(annotation))
    if origin is list:
        name = f"list of {typing.get_args(annotation)[0].__name__}"
    elif origin is dict:
        name = "table"
    raise ConfigError(f"{where}: '{key}' must be {name}, got {value!r}")


def _check_ranges(cfg: Config, where: str) -> None:
    def bad(key, value, expected):
        raise ConfigError(f"{where}: '{key}' must be {expected}, got {value!r}")

    e, p, o, t = cfg.env, cfg.policy, cfg.optimizer, cfg.train
    if e.id not in ENV_IDS:
        bad("env.id", e.id, f"one of {', '.join(ENV_IDS)}")
    if e.num_envs < 1:
        bad("env.num_envs", e.num_envs, ">= 1")
    if e.vectorization not in VECTORIZATIONS:
        bad("env.vectorization", e.vectorization, f"one of {', '.join(VECTORIZATIONS)}")
    if p.backend not in BACKENDS:
        bad("policy.backend", p.backend, f"one of {', '.join(BACKENDS)}")
    if any(h < 1 for h in p.hidden_sizes):
        bad("policy.hidden_sizes", p.hidden_sizes, "a list of sizes >= 1")
    if p.dtype not in DTYPES:
        bad("policy.dtype", p.dtype, f"one of {', '.join(DTYPES)}")
    if p.reduction not in REDUCTIONS:
        bad("policy.reduction", p.reduction, f"one of {', '.join(REDUCTIONS)}")
    if not (o.learning_rate > 0 and math.isfinite(o.learning_rate)):
        bad("optimizer.learning_rate", o.learning_rate, "> 0")
    if not 0 <= o.decay < 1:
        bad("optimizer.decay", o.decay, "in [0, 1)")
    if not (o.epsilon > 0 and math.isfinite(o.epsilon)):
        bad("optimizer.epsilon", o.epsilon, "> 0")
    if t.seed < 0:
        bad("train.seed", t.seed, ">= 0")
    if t.episodes < 1:
        bad("train.episodes", t.episodes, ">= 1")
    if t.batch_episodes < 1:
        bad("train.batch_episodes", t.batch_episodes, ">= 1")
    if not 0 < t.gamma <= 1:
        bad("train.gamma", t.gamma, "in (0, 1]")
    if t.standardize not in STANDARDIZE:
        bad("train.standardize", t.standardize, f"one of {', '.join(STANDARDIZE)}")
    if t.max_steps is not None and t.max_steps < 1:
        bad("train.max_steps", t.max_steps, ">= 1")
    if t.solved_mean100 is not None and not math.isfinite(t.solved_mean100):
        bad("train.solved_mean100", t.solved_mean100, "a finite number")
    if t.max_seconds is not None and not (t.max_seconds > 0 and math.isfinite(t.max_seconds)):
        bad("train.max_seconds", t.max_seconds, "> 0")
    if t.checkpoint_every < 1:
        bad("train.checkpoint_every", t.checkpoint_every, ">= 1")


def from_dict(data: dict, where: str = "config") -> Config:
    """Build and validate a Config from nested dicts ``{section: {key: value}}``."""
    cfg = Config()
    for section, values in data.items():
        if section not in SECTIONS:
            raise _unknown(section, where)
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: '{section}' must be a table [{section}], got {values!r}")
        target = getattr(cfg, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        types_ = typing.get_type_hints(type(target))
        for key, value in values.items():
            full = f"{section}.{key}"
            if key not in fields:
                raise _unknown(full, where)
            setattr(target, key, _coerce(value, types_[key], full, where))
    _check_ranges(cfg, where)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"train.seed=3"`` -> ("train", "seed", 3); the value is read as TOML, else as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.seed=3")
    path, raw = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words: backend=tensorflow
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (defaults when ``path`` is None), then ``section.key=value`` overrides.

    Raises:
        ConfigError: with one line naming the file and the key.
    """
    data: dict[str, dict] = {}
    where = "config"
    if path is not None:
        where = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{where}: no such config file")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where}: TOML syntax error: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not a text (TOML) file") from None
    for text in overrides or []:
        section, key, value = parse_override(text)
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"--set {text!r}: '{section}' is not a section")
        data[section][key] = value
    return from_dict(data, where)

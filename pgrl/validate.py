"""The choices a run's values take and the checks of single values (standard library only).

A check takes the value's name as the caller shows it (``"'policy.dtype'"``) and returns the value
in its canonical type, or raises ValueError ``"<name> must be <expected>, got <value>"``.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import NoReturn

DTYPES = ("float32", "float64")
REDUCTIONS = ("sum", "mean")
BACKENDS = ("numpy", "tensorflow")
STANDARDIZE = ("episode", "batch", "none")  # advantages: per episode (Karpathy), per batch
BASELINES = ("none", "value")
ALGORITHMS = ("reinforce", "ppo")
RUNNERS = ("local", "processes", "ray")
# "sync": in this process; "workers": a process each (pgrl.vector); "async": gymnasium's
# AsyncVectorEnv; "auto": sync for cheap envs, workers for Pong
VECTORIZATIONS = ("sync", "async")  # pgrl.rollout.make_vector_env

# The envs pgrl is built around; any other registered gymnasium env with Discrete(n) actions and
# a flat Box observation works too (Atari games other than Pong need their own preprocessing).
SUPPORTED_ENV_IDS = ("CartPole-v1", "ALE/Pong-v5")
# [namespace/]name-v<version>: every id gymnasium and ale-py register carries a version
_ENV_ID = re.compile(r"(?:[\w:.-]+/)?[\w:.-]+-v\d+")
# Pong's minimal action set, as ale-py lists it (env.unwrapped.get_action_meanings()): RIGHT moves
# the paddle up, LEFT down. FIRE, RIGHTFIRE and LEFTFIRE move it as NOOP, RIGHT and LEFT do, and
# press the button, which sends the ball back off the paddle twice as fast.
PONG_ACTIONS = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")
# The paddle's directions by name; ALE's own UP and DOWN exist only in the full action set.
PONG_ACTION_ALIASES = {"UP": "RIGHT", "DOWN": "LEFT"}


def cut(value, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for one-line messages."""
    return shorten(repr(value), limit)


def shorten(text, limit: int) -> str:
    """``str(text)``, cut to about ``limit`` characters, saying how long it was."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text):,} chars)"


def fail(name: str, value, expected: str) -> NoReturn:
    raise ValueError(f"{name} must be {expected}, got {cut(value)}")


def rule(ok: Callable, expected: str) -> Callable:
    """A check ``(name, value) -> value`` of an already typed value: ``ok(value)`` or fail."""

    def check(name: str, value):
        if not ok(value):
            fail(name, value, expected)
        return value

    return check


def choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        fail(name, value, f"one of {', '.join(choices)}")
    return value


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        fail(name, value, "a positive integer")
    return int(value)


def real(name: str, value, ok: Callable[[float], bool], expected: str) -> float:
    """``value`` as a float: a number (not a bool), finite, and ``ok``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, value, "a number")
    value = float(value)
    if not math.isfinite(value):
        fail(name, value, "finite")
    if not ok(value):
        fail(name, value, expected)
    return value


def learning_rate(name: str, value) -> float:
    """A step size or RMSprop's epsilon: > 0."""
    return real(name, value, lambda x: x > 0, "> 0")


epsilon = learning_rate  # RMSprop's denominator guard: > 0 as well


def decay(name: str, value) -> float:
    """RMSprop's discount of the running mean of squared gradients: in [0, 1)."""
    return real(name, value, lambda x: 0 <= x < 1, "in [0, 1)")


def entropy_coef(name: str, value) -> float:
    return real(name, value, lambda x: x >= 0, "a finite number >= 0")


def max_grad_norm(name: str, value) -> float | None:
    """The global-norm clipping threshold, or None: no clipping."""
    if value is None:
        return None
    return real(name, value, lambda x: x > 0, "a finite number > 0 (leave it out for no clipping)")


def clip(name: str, value) -> float:
    """PPO's clip range ``eps``: the ratio is kept in ``[1 - eps, 1 + eps]``, so 0 < eps < 1."""
    return real(name, value, lambda x: 0 < x < 1, "in (0, 1)")


def fraction(name: str, value) -> float:
    """A discount-like weight in [0, 1] (GAE's lambda)."""
    return real(name, value, lambda x: 0 <= x <= 1, "in [0, 1]")


def env_id(name: str, value) -> str:
    """A supported id, or one of gymnasium's form that is no Atari game (pgrl.envs.check_env_id
    reads the registry)."""
    if value not in SUPPORTED_ENV_IDS and not (
        isinstance(value, str) and _ENV_ID.fullmatch(value) and not value.startswith("ALE/")
    ):
        fail(name, value, "one of CartPole-v1, ALE/Pong-v5 or a registered gymnasium env id")
    return value


def pong_actions(env_id: str, actions: Sequence[str] | None) -> list[str] | None:
    """ALE names of Pong's ``actions`` (``"UP"``, ``"DOWN"`` resolved to RIGHT and LEFT), or None
    for the default binary map; ValueError naming the valid ones."""
    if actions is None or (isinstance(actions, list | tuple) and len(actions) == 0):
        return None
    valid = ", ".join(
        [*PONG_ACTIONS, *(f"{alias} (= {name})" for alias, name in PONG_ACTION_ALIASES.items())]
    )
    if env_id != "ALE/Pong-v5":
        raise ValueError(
            f"action names are for ALE/Pong-v5 only ({valid}); {env_id} keeps its own actions"
        )
    if not (isinstance(actions, list | tuple) and all(isinstance(a, str) for a in actions)):
        raise ValueError(f"expected a list of Pong's action names ({valid}), got {actions!r}")
    unknown = [a for a in actions if a not in PONG_ACTIONS and a not in PONG_ACTION_ALIASES]
    if unknown:
        raise ValueError(f"unknown action {unknown[0]!r}; Pong's actions: {valid}")
    names = [PONG_ACTION_ALIASES.get(a, a) for a in actions]
    for i, name in enumerate(names):
        if name in names[:i]:
            alias = next((a for a in (actions[names.index(name)], actions[i]) if a != name), None)
            why = f" ({alias!r} stands for {name!r})" if alias is not None else ""
            raise ValueError(f"action {name!r} is listed twice in {list(actions)}{why}")
    if len(names) < 2:
        raise ValueError(f"needs at least 2 actions, got {list(actions)}; Pong's actions: {valid}")
    return names

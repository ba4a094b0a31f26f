"""Environments with Discrete(2) actions and flat observations: CartPole and Karpathy's Pong.

Pong preprocessing is a stack of small gymnasium wrappers, each usable alone (DESIGN.md,
"Environments"; semantics of Karpathy's pg-pong gist):

    gym.make("ALE/Pong-v5")   obs (210, 160, 3) uint8 frames, Discrete(6) actions
    -> KarpathyPreprocess     obs (6400,) int8 in {0, 1}
    -> FrameDifference        obs (6400,) int8 in {-1, 0, 1}, zeros on the first step of an episode
    -> BinaryActionMap        Discrete(2) actions: 1 -> UP (ALE action 2), 0 -> DOWN (ALE action 3)

ale-py is optional (``pgrl[atari]``) and imported only when a Pong id is requested.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "SUPPORTED_ENV_IDS",
    "BinaryActionMap",
    "FrameDifference",
    "KarpathyPreprocess",
    "check_binary_env",
    "make_env",
]

SUPPORTED_ENV_IDS = ("CartPole-v1", "ALE/Pong-v5")


class KarpathyPreprocess(gym.ObservationWrapper):
    """210x160x3 uint8 frame -> (6400,) int8 in {0, 1}: the gist's ``prepro`` (80x80, flattened).

    Crop rows 35:195 (drops the score and the bottom border), keep every 2nd row and column of
    channel 0, erase the background (values 144 and 109) and set everything else that is nonzero
    (paddles, ball) to 1. int8 instead of the gist's float64: 8x less memory per stored step, and
    the policy casts to its own dtype anyway.
    """

    FRAME_SHAPE = (210, 160, 3)
    OBS_SIZE = 80 * 80

    # Channel-0 value -> output. One gather through this table replaces the gist's four masked
    # assignments and reads each pixel once (about 7 us per frame against 24 us for the gist).
    _LUT = np.ones(256, dtype=np.int8)
    _LUT[[0, 109, 144]] = 0

    def __init__(self, env: gym.Env):
        space = env.observation_space
        if not (
            isinstance(space, spaces.Box)
            and space.shape == self.FRAME_SHAPE
            and space.dtype == np.uint8
        ):
            raise ValueError(
                "KarpathyPreprocess expects RGB frames Box(0, 255, (210, 160, 3), uint8) "
                f"(ALE obs_type='rgb'), got {space}"
            )
        super().__init__(env)
        self.observation_space = spaces.Box(0, 1, (self.OBS_SIZE,), np.int8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """(210, 160, 3) uint8 -> new (6400,) int8 array; the input frame is left untouched."""
        # The slice is a strided view (no copy); take() allocates the only new array, C-ordered,
        # so ravel() is a view of it.
        return self._LUT.take(observation[35:195:2, ::2, 0]).ravel()


class FrameDifference(gym.Wrapper):
    """Observation = current frame - previous frame, (n,) int8 in {-1, 0, 1}.

    A single frame does not show which way the ball moves; the difference does (the gist's
    ``x = cur_x - prev_x``). Zeros on the first step of an episode, where there is no previous
    frame: ``reset()`` returns zeros and forgets the last episode.
    """

    def __init__(self, env: gym.Env):
        space = env.observation_space
        if not (
            isinstance(space, spaces.Box)
            and len(space.shape) == 1
            and space.dtype == np.int8
            and np.all(space.low >= 0)
            and np.all(space.high <= 1)
        ):
            raise ValueError(
                "FrameDifference expects flat 0/1 frames Box(0, 1, (n,), int8), as "
                f"KarpathyPreprocess gives, got {space}"
            )
        super().__init__(env)
        self.observation_space = spaces.Box(-1, 1, space.shape, np.int8)
        # A copy, not a reference: a wrapped env may overwrite its observation buffer in place.
        self._prev = np.zeros(space.shape, dtype=np.int8)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        frame, info = self.env.reset(seed=seed, options=options)
        self._prev[...] = frame
        return np.zeros_like(self._prev), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        diff = frame - self._prev
        self._prev[...] = frame
        return diff, reward, terminated, truncated, info


class BinaryActionMap(gym.ActionWrapper):
    """Discrete(2) actions onto ALE's: 1 -> UP (ALE action 2), 0 -> DOWN (ALE action 3).

    The gist samples ``action = 2 if uniform() < aprob else 3``, so the policy's
    ``p = P(action = 1)`` is the probability of moving up.
    """

    UP = 2
    DOWN = 3

    def __init__(self, env: gym.Env):
        space = env.action_space
        if not (isinstance(space, spaces.Discrete) and space.start == 0 and space.n >= 4):
            raise ValueError(
                "BinaryActionMap expects ALE actions Discrete(n) with n >= 4 (it sends actions "
                f"2 and 3), got {space}"
            )
        # Action numbers index the game's action set: in ALE's minimal set for Pong, 2 and 3 are
        # RIGHT and LEFT (the paddle's up and down); with full_action_space=True they are UP and
        # RIGHT, and the agent would silently never move down.
        get_action_meanings = getattr(env.unwrapped, "get_action_meanings", None)
        if get_action_meanings is not None:
            meanings = list(get_action_meanings())
            if meanings[self.UP : self.DOWN + 1] != ["RIGHT", "LEFT"]:
                raise ValueError(
                    "BinaryActionMap needs actions 2 and 3 to be RIGHT and LEFT (ALE's minimal "
                    f"action set; drop full_action_space=True), got {meanings}"
                )
        super().__init__(env)
        self.action_space = spaces.Discrete(2)

    def action(self, action: int) -> int:
        if action == 1:
            return self.UP
        if action == 0:
            return self.DOWN
        raise ValueError(f"BinaryActionMap takes action 0 (DOWN) or 1 (UP), got {action!r}")


def check_binary_env(env: gym.Env) -> gym.Env:
    """Return ``env`` unchanged if its action space is Discrete(2), else raise ValueError.

    pgrl's policy outputs one probability, P(action = 1), so it can only drive envs whose
    actions are exactly 0 and 1.

    Args:
        env: any gymnasium env.

    Returns:
        ``env`` itself.
    """
    space = env.action_space
    if space != spaces.Discrete(2):
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise ValueError(
            f"pgrl needs Discrete(2) actions (its policy gives P(action = 1)), but {env_id} has "
            f"action space {space}"
        )
    return env


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """Make a supported env with Discrete(2) actions and a flat observation.

    Args:
        env_id: ``"CartPole-v1"`` (obs (4,) float32, action 1 pushes right) or ``"ALE/Pong-v5"``
            (obs (6400,) int8 frame difference in {-1, 0, 1}, action 1 = UP, 0 = DOWN; an
            episode is a game to 21, reward +1/-1 per point).
        seed: if given, ``env.reset(seed=seed)`` and ``env.action_space.seed(seed)`` are called
            here once. That seeds the env's RNG (for Pong also ALE's emulator, whose sticky
            actions are random); the caller's next ``env.reset()`` continues that stream, so the
            same seed gives the same run. Without a seed gymnasium seeds from the OS.
        **kwargs: passed to ``gym.make``, e.g. ``render_mode``, ``frameskip``,
            ``repeat_action_probability``. Pong keeps the v5 defaults unless overridden:
            ``frameskip=4``, ``repeat_action_probability=0.25``.

    Returns:
        The env; for Pong, ``gym.make`` wrapped in KarpathyPreprocess, FrameDifference and
        BinaryActionMap (``env.unwrapped`` is the ALE env).

    Raises:
        ValueError: ``env_id`` is not supported.
        ImportError: ``env_id`` is an Atari game and ale-py is not installed.
    """
    if env_id not in SUPPORTED_ENV_IDS:
        raise ValueError(
            f"unknown env id {env_id!r}; supported: {', '.join(map(repr, SUPPORTED_ENV_IDS))}"
        )
    if env_id.startswith("ALE/"):
        _register_ale_envs(env_id)
        env = gym.make(env_id, **kwargs)
        env = BinaryActionMap(FrameDifference(KarpathyPreprocess(env)))
    else:
        env = gym.make(env_id, **kwargs)
    check_binary_env(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _register_ale_envs(env_id: str) -> None:
    """Import ale-py (optional dependency) and register its ``ALE/...`` ids with gymnasium."""
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(
            f"{env_id} needs ale-py, which is not installed: pip install pgrl[atari]"
        ) from err
    gym.register_envs(ale_py)

"""Environments with flat observations and Discrete(n) or Box(d,) actions: CartPole, Karpathy's
Pong, and any other gymnasium env of that kind (Acrobot, LunarLander, Pendulum, MuJoCo's
locomotion tasks, ...), by its id.

Pong preprocessing is a stack of small gymnasium wrappers, each usable alone (DESIGN.md,
"Environments"; semantics of Karpathy's pg-pong gist):

    gym.make("ALE/Pong-v5", obs_type="ram")   Discrete(6) actions; its obs (RAM) is ignored
    -> KarpathyScreen    obs (6400,) int8 in {0, 1}, from ALE's screen of palette indices
    -> FrameDifference   obs (6400,) int8 in {-1, 0, 1}, zeros on the first step of an episode
    -> BinaryActionMap   Discrete(2) actions: 1 -> UP (ALE action 2), 0 -> DOWN (ALE action 3)
       or ALEActionMap   with ``actions``: Discrete(len(actions)), action i -> the ALE action
                         named ``actions[i]`` (e.g. NOOP, RIGHT, LEFT), for the categorical head

Each wrapper records its constructor arguments (``RecordConstructorArgs``), so
``gym.make(env.spec)`` rebuilds the stack. Wrappers pickle with their state; ale-py rebuilds its
emulator from its constructor arguments (a fresh game). ale-py is optional (``pgrl[atari]``) and
imported only when a Pong id is requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pgrl.distributions import box_action_problem
from pgrl.validate import PONG_ACTION_ALIASES, PONG_ACTIONS, SUPPORTED_ENV_IDS, pong_actions

__all__ = [
    "PONG_ACTIONS",
    "PONG_ACTION_ALIASES",
    "SUPPORTED_ENV_IDS",
    "ALEActionMap",
    "BinaryActionMap",
    "FrameDifference",
    "KarpathyPreprocess",
    "KarpathyScreen",
    "check_binary_env",
    "check_discrete_env",
    "check_env_spaces",
    "make_env",
    "pong_actions",
]


class KarpathyPreprocess(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """210x160x3 uint8 frame -> (6400,) int8 in {0, 1}: the gist's ``prepro`` (80x80, flattened).

    int8 instead of the gist's float64: 8x less memory per stored step, and the policy casts to
    its own dtype anyway. make_env uses KarpathyScreen instead, which skips the RGB frame.
    """

    FRAME_SHAPE = (210, 160, 3)
    OBS_SIZE = 80 * 80

    # Channel-0 value -> output. One gather through this table replaces the gist's four masked
    # assignments and reads each pixel once (about 3x faster than the gist's).
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
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.observation_space = spaces.Box(0, 1, (self.OBS_SIZE,), np.int8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """(210, 160, 3) uint8 -> new (6400,) int8 array; the input frame is left untouched."""
        # take() allocates the only new array, C-ordered, so ravel() is a view of it
        return self._LUT.take(observation[35:195:2, ::2, 0]).ravel()


class KarpathyScreen(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """ALE env -> obs (6400,) int8 in {0, 1}: KarpathyPreprocess's output, from ALE's index screen.

    ALE's screen of palette indices (``ale.getScreen``) is ~20x cheaper than its RGB frame; each
    index maps to 0/1 through a 256-entry table. The table is learned, not ALE's palette copied:
    a crop showing an unknown index is fetched once in RGB to fill it (about 3 times per Pong
    env). The inner env's observations are ignored: build it with ``obs_type="ram"``.
    """

    OBS_SIZE = 80 * 80
    SCREEN_SHAPE = (210, 160)
    _UNKNOWN = -1  # table entry not yet seen; int8 so that one min() finds it

    def __init__(self, env: gym.Env):
        ale = getattr(env.unwrapped, "ale", None)
        if ale is None:
            raise ValueError(
                "KarpathyScreen needs an ale-py env (with env.unwrapped.ale), got "
                f"{type(env.unwrapped).__name__}"
            )
        if tuple(ale.getScreenDims()) != self.SCREEN_SHAPE:
            raise ValueError(
                f"KarpathyScreen needs a {self.SCREEN_SHAPE} screen, got {ale.getScreenDims()}"
            )
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.observation_space = spaces.Box(0, 1, (self.OBS_SIZE,), np.int8)
        self._lut = np.full(256, self._UNKNOWN, dtype=np.int8)
        self._bind_screen()

    def _bind_screen(self) -> None:
        """The ALE handle, the buffer getScreen refills in place, and a view of its crop."""
        self._ale = self.env.unwrapped.ale
        self._screen = np.zeros(self.SCREEN_SHAPE, dtype=np.uint8)
        self._crop = self._screen[35:195:2, ::2]

    def __getstate__(self) -> dict[str, Any]:
        # ALE's handle does not pickle and a copied view would no longer look at the copied
        # buffer: both are rebound on unpickling, to the env ale-py rebuilds. ale-py rebuilds it
        # from constructor arguments only (EzPickle), which drops the spec gym.make set on it,
        # and every wrapper's spec with it: carry that spec across.
        state = self.__dict__.copy()
        for name in ("_ale", "_screen", "_crop"):
            del state[name]
        state["_unwrapped_spec"] = self.env.unwrapped.spec
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = state.copy()
        unwrapped_spec = state.pop("_unwrapped_spec", None)
        self.__dict__.update(state)
        if self.env.unwrapped.spec is None:
            self.env.unwrapped.spec = unwrapped_spec
        self._bind_screen()

    def observation(self, observation: Any) -> np.ndarray:
        """ALE's current screen (not the inner env's ``observation``) -> new (6400,) int8 array."""
        self._ale.getScreen(self._screen)
        obs = self._lut.take(self._crop).ravel()
        if obs.min() == self._UNKNOWN:
            obs = self._learn_colors()
        return obs

    def _learn_colors(self) -> np.ndarray:
        """Fill the table from this frame's RGB; return its observation, (6400,) int8."""
        obs = KarpathyPreprocess._LUT.take(self._ale.getScreenRGB()[35:195:2, ::2, 0])
        self._lut[self._crop] = obs
        # Exact only if each index has one color, as in ALE's palette; a repeated index whose
        # pixels disagree kept just one of them above, so check rather than trust.
        if not np.array_equal(self._lut.take(self._crop), obs):
            raise RuntimeError(
                "ALE's screen gave one palette index two colors in one frame; KarpathyScreen "
                "cannot map indices to pixels (use KarpathyPreprocess on obs_type='rgb')"
            )
        return obs.ravel()


class FrameDifference(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Observation = current frame - previous frame, (n,) int8 in {-1, 0, 1}; zeros on reset.

    A single frame does not show which way the ball moves; the difference does (the gist's
    ``x = cur_x - prev_x``).
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
        gym.utils.RecordConstructorArgs.__init__(self)
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


class BinaryActionMap(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Discrete(2) actions onto ALE's: 1 -> UP (ALE action 2), 0 -> DOWN (ALE action 3), as the
    gist's ``action = 2 if uniform() < aprob else 3``."""

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
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.action_space = spaces.Discrete(2)

    def action(self, action: int) -> int:
        if action == 1:
            return self.UP
        if action == 0:
            return self.DOWN
        raise ValueError(f"BinaryActionMap takes action 0 (DOWN) or 1 (UP), got {action!r}")


class ALEActionMap(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Discrete(len(actions)) actions onto an ALE env's, by name: action i -> the ALE action
    named ``actions[i]``. Names, not numbers: a name means the same action in the minimal and the
    full action set."""

    def __init__(self, env: gym.Env, actions: Sequence[str]):
        get_action_meanings = getattr(env.unwrapped, "get_action_meanings", None)
        space = env.action_space
        if get_action_meanings is None or not isinstance(space, spaces.Discrete):
            raise ValueError(
                "ALEActionMap needs an ale-py env (Discrete actions and get_action_meanings()), "
                f"got {type(env.unwrapped).__name__} with action space {space}"
            )
        meanings = list(get_action_meanings())
        names = list(actions) if isinstance(actions, list | tuple) else None
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(f"ALEActionMap takes a list of action names, got {actions!r}")
        unknown = [name for name in names if name not in meanings]
        if unknown:
            raise ValueError(
                f"ALEActionMap: no action {unknown[0]!r} in this env; its actions: "
                f"{', '.join(meanings)}"
            )
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:
            raise ValueError(f"ALEActionMap: action {twice!r} is listed twice in {names}")
        gym.utils.RecordConstructorArgs.__init__(self, actions=names)
        super().__init__(env)
        self.actions = tuple(names)
        self._ale_actions = [space.start + meanings.index(name) for name in names]
        self.action_space = spaces.Discrete(len(names))

    def action(self, action: int) -> int:
        if not (isinstance(action, int | np.integer) and 0 <= action < len(self._ale_actions)):
            raise ValueError(
                f"ALEActionMap takes actions 0 to {len(self._ale_actions) - 1} "
                f"({', '.join(self.actions)}), got {action!r}"
            )
        return self._ale_actions[action]


def check_binary_env(env: gym.Env) -> gym.Env:
    """``env`` itself if its actions are Discrete(2), else ValueError."""
    space = env.action_space
    if space != spaces.Discrete(2):
        raise ValueError(
            f"pgrl needs Discrete(2) actions (its policy gives P(action = 1)), but {_name(env)} "
            f"has action space {space}"
        )
    return env


def check_discrete_env(env: gym.Env) -> int:
    """The number of actions ``n`` of an env with ``Discrete(n)`` actions (from 0) and a flat
    ``Box`` observation; ValueError naming the env and the space otherwise."""
    space = env.action_space
    if not (isinstance(space, spaces.Discrete) and space.start == 0 and space.n >= 2):
        raise ValueError(
            f"pgrl needs Discrete(n) actions numbered from 0 (n >= 2), but {_name(env)} has "
            f"action space {space}"
        )
    return check_env_spaces(env)


def check_env_spaces(env: gym.Env) -> int:
    """The number of actions ``n`` of an env with ``Discrete(n)`` actions (from 0), or the
    dimension ``d`` of its ``Box(d,)`` actions with finite bounds (the gaussian head's), and a
    flat ``Box`` observation; ValueError naming the env and the space otherwise."""
    env_id = _name(env)
    space = env.action_space
    if isinstance(space, spaces.Box):
        problem = box_action_problem(space)
        if problem:
            raise ValueError(f"{env_id}: {problem}")
        n = int(space.shape[0])
    elif isinstance(space, spaces.Discrete) and space.start == 0 and space.n >= 2:
        n = int(space.n)
    else:
        raise ValueError(
            f"pgrl needs Discrete(n) actions numbered from 0 (n >= 2) or Box(d,) actions, but "
            f"{env_id} has action space {space}"
        )
    obs_space = env.observation_space
    if not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1):
        raise ValueError(
            f"pgrl needs flat Box observations (obs_dim,), but {env_id} has observation space "
            f"{obs_space}"
        )
    return n


def _name(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def check_env_id(env_id: str) -> None:
    """ValueError unless ``env_id`` is one pgrl can make: a supported id or a registered
    gymnasium id that is not an Atari game (those need Pong's preprocessing)."""
    if env_id in SUPPORTED_ENV_IDS:
        return
    spec = gym.envs.registry.get(env_id) if isinstance(env_id, str) else None
    entry = str(spec.entry_point) if spec is not None else ""
    if spec is None or env_id.startswith("ALE/") or "ale_py" in entry:
        name = env_id.rsplit("-v", 1)[0] if isinstance(env_id, str) else None
        versions = [k for k in gym.envs.registry if k.rsplit("-v", 1)[0] == name and k != env_id]
        other = f" (gymnasium has {', '.join(versions)})" if versions and spec is None else ""
        raise ValueError(
            f"unknown env id {env_id!r}{other}; supported: "
            f"{', '.join(map(repr, SUPPORTED_ENV_IDS))}, and gymnasium's registered envs with "
            "Discrete(n) or Box(d,) actions and flat Box observations (no other Atari game)"
        )


def make_env(
    env_id: str, seed: int | None = None, actions: Sequence[str] | None = None, **kwargs: Any
) -> gym.Env:
    """Make an env with Discrete(n) or Box(d,) actions and a flat observation.

    Args:
        env_id: ``"CartPole-v1"``, ``"ALE/Pong-v5"`` (obs (6400,) int8 frame difference in
            {-1, 0, 1}, action 1 = UP, 0 = DOWN; an episode is a game to 21), or any other
            registered gymnasium id with ``Discrete(n)`` or ``Box(d,)`` actions (finite
            bounds) and a flat ``Box`` observation.
        seed: if given, seeds the env's first reset and its action space here once (for Pong
            also ALE's sticky actions); the caller's next ``env.reset()`` continues that stream.
        actions: Pong only: the actions the policy chooses among, by name from
            :data:`PONG_ACTIONS` (``"UP"`` and ``"DOWN"`` stand for RIGHT and LEFT), e.g.
            ``["NOOP", "UP", "DOWN"]`` (:class:`ALEActionMap`). None or empty: Discrete(2),
            1 = UP, 0 = DOWN (:class:`BinaryActionMap`).
        **kwargs: passed to ``gym.make``, e.g. ``render_mode``, ``frameskip``,
            ``max_episode_steps``; Pong takes no ``obs_type``.

    Returns:
        The env; for Pong, ``gym.make(env_id, obs_type="ram", **kwargs)`` wrapped in
        KarpathyScreen, FrameDifference and BinaryActionMap or ALEActionMap.
        ``gym.make(env.spec)`` builds the same stack, unseeded (Pong's ``gym.make_vec`` needs
        ``vectorization_mode="sync"`` or ``"async"``: ale-py's vector env cannot apply wrappers).

    Raises:
        ValueError: ``env_id`` is unknown or unfit, ``obs_type`` is passed for Pong, or
            ``actions`` are not Pong's.
        ImportError: ``env_id`` is an Atari game and ale-py is not installed.
    """
    check_env_id(env_id)
    _check_common_kwargs(kwargs)
    names = pong_actions(env_id, actions)
    env = (
        _make_pong(env_id, names, kwargs)
        if env_id.startswith("ALE/")
        else gym.make(env_id, **kwargs)
    )
    try:
        check_env_spaces(env)
    except ValueError:
        env.close()
        raise
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _make_pong(env_id: str, names: list[str] | None, kwargs: dict) -> gym.Env:
    """Pong with Karpathy's preprocessing and its action map."""
    if "obs_type" in kwargs:
        raise ValueError(
            f"make_env builds {env_id}'s observation itself (Karpathy's 80x80 frame "
            f"difference), so it takes no obs_type (got {kwargs['obs_type']!r})"
        )
    _register_ale_envs(env_id)
    # RAM observations are 128 bytes that KarpathyScreen ignores; "rgb" would have ALE
    # assemble a frame every step that KarpathyScreen does not need.
    env = FrameDifference(KarpathyScreen(gym.make(env_id, obs_type="ram", **kwargs)))
    return BinaryActionMap(env) if names is None else ALEActionMap(env, names)


def _check_common_kwargs(kwargs: dict) -> None:
    """Checked here because gymnasium and ale-py accept some impossible values silently (a
    negative step limit, a probability of 2) or fail on them with a traceback (a render mode
    that is no string)."""
    p = kwargs.get("repeat_action_probability")
    if p is not None and not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
        raise ValueError(f"repeat_action_probability must be in [0, 1], got {p!r}")
    for key in ("max_episode_steps", "frameskip"):
        value = kwargs.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    mode = kwargs.get("render_mode")
    if mode is not None and not isinstance(mode, str):  # gymnasium calls str methods on it
        raise ValueError(f"render_mode must be a string such as 'rgb_array', got {mode!r}")


def _register_ale_envs(env_id: str) -> None:
    """Import ale-py (optional) and register its ``ALE/...`` ids with gymnasium."""
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(
            f"{env_id} needs ale-py, which is not installed: pip install pgrl[atari]"
        ) from err
    gym.register_envs(ale_py)

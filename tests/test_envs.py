"""pgrl.envs: Pong wrappers against Karpathy's gist written out, spaces, seeding, bad input,
and gymnasium's API (check_env, specs that rebuild the env, copies that behave like it)."""

from __future__ import annotations

import copy
import functools
import pickle
import sys
import warnings

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env

from pgrl.envs import (
    PONG_ACTIONS,
    SUPPORTED_ENV_IDS,
    ALEActionMap,
    BinaryActionMap,
    FrameDifference,
    KarpathyPreprocess,
    KarpathyScreen,
    check_binary_env,
    make_env,
)
from pgrl.rollout import make_vector_env

gym.register_envs(ale_py)

FRAME_SPACE = spaces.Box(0, 255, (210, 160, 3), np.uint8)


def gist_prepro(frame):
    """Karpathy's prepro, its ``I`` renamed, on a copy (the gist modifies the frame in place)."""
    frame = frame.copy()
    frame = frame[35:195]
    frame = frame[::2, ::2, 0]
    frame[frame == 144] = 0
    frame[frame == 109] = 0
    frame[frame != 0] = 1
    return frame.astype(np.float64).ravel()


def random_colors(rng, shape):
    """Random uint8 RGB colors, shape (..., 3); a third of them get a red that Karpathy's prepro
    erases or keeps as 0 (background 144, 109, or black), the rest are mostly paddle/ball pixels."""
    colors = rng.integers(0, 256, shape, dtype=np.uint8)
    background = rng.random(shape[:-1]) < 1 / 3
    colors[background, 0] = rng.choice(np.array([0, 109, 144], np.uint8), background.sum())
    return colors


def gist_inputs(frames):
    """The gist's policy inputs x for one episode's raw frames (its main loop)."""
    prev_x, xs = None, []
    for observation in frames:
        cur_x = gist_prepro(observation)
        x = cur_x - prev_x if prev_x is not None else np.zeros(80 * 80)
        prev_x = cur_x
        xs.append(x)
    return xs


class ReplayEnv(gym.Env):
    """Replays ``frames`` from one buffer overwritten in place, like an emulator's screen."""

    def __init__(self, frames, observation_space, action_space=None):
        self.observation_space = observation_space
        self.action_space = action_space if action_space is not None else spaces.Discrete(2)
        self.frames = frames
        self.buffer = np.zeros_like(frames[0])
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.buffer[...] = self.frames[0]
        return self.buffer, {}

    def step(self, action):
        self.t += 1
        self.buffer[...] = self.frames[self.t]
        return self.buffer, 0.0, False, False, {}


class FakeALE:
    """ALE's screen calls over ``screens`` of palette indices; ``rgb_screens`` counts RGB reads."""

    def __init__(self, screens, palette):
        self.screens, self.palette = screens, palette
        self.t = 0
        self.rgb_screens = 0

    def getScreenDims(self):
        return (210, 160)

    def getScreen(self, buffer):
        buffer[...] = self.screens[self.t]

    def getScreenRGB(self):
        self.rgb_screens += 1
        return self.palette[self.screens[self.t]]


class FakeALEEnv(gym.Env):
    """An env whose ``ale`` shows the next screen on every step; its own observation is junk."""

    observation_space = spaces.Box(0, 255, (128,), np.uint8)
    action_space = spaces.Discrete(6)

    def __init__(self, screens, palette):
        self.ale = FakeALE(screens, palette)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.ale.t = 0
        return np.zeros(128, np.uint8), {}

    def step(self, action):
        self.ale.t += 1
        return np.zeros(128, np.uint8), 0.0, False, False, {}


# --- Pong ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_pong_reproduces_karpathy_preprocessing(seed):
    env = make_env("ALE/Pong-v5", seed=seed)
    raw = gym.make("ALE/Pong-v5")
    raw.reset(seed=seed)  # what make_env does with a seed
    actions = np.random.default_rng(seed).integers(0, 2, size=150)

    nonzero = 0
    for _episode in range(2):  # the second reset comes mid-game: FrameDifference must forget
        obs, _ = env.reset()
        frame, _ = raw.reset()
        observations, frames = [obs], [frame]
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a)
            frame, raw_reward, raw_terminated, raw_truncated, _ = raw.step(2 if a == 1 else 3)
            assert (reward, terminated, truncated) == (raw_reward, raw_terminated, raw_truncated)
            observations.append(obs)
            frames.append(frame)

        for t, (obs, x) in enumerate(zip(observations, gist_inputs(frames), strict=True)):
            assert obs.dtype == np.int8 and obs.shape == (6400,)
            assert env.observation_space.contains(obs), t
            np.testing.assert_array_equal(obs, x, err_msg=f"step {t}")
            nonzero += bool(np.any(obs))
        assert not np.any(observations[0])
    # The ball and paddles move, so most differences are nonzero; all-zero would prove nothing.
    assert nonzero > 200


def test_pong_spaces_and_defaults():
    env = make_env("ALE/Pong-v5")
    assert env.action_space == spaces.Discrete(2)
    assert env.observation_space == spaces.Box(-1, 1, (6400,), np.int8)
    assert isinstance(env.unwrapped, ale_py.AtariEnv)
    assert env.spec.kwargs["obs_type"] == "ram"  # KarpathyScreen reads the screen itself
    assert env.spec.kwargs["frameskip"] == 4
    assert env.spec.kwargs["repeat_action_probability"] == 0.25


def test_pong_kwargs_pass_through():
    env = make_env("ALE/Pong-v5", frameskip=2, repeat_action_probability=0.0)
    assert env.spec.kwargs["frameskip"] == 2
    assert env.spec.kwargs["repeat_action_probability"] == 0.0

    env = make_env("ALE/Pong-v5", seed=0, max_episode_steps=3)
    env.reset()
    assert [env.step(1)[3] for _ in range(3)] == [False, False, True]


def test_pong_renders_rgb_frames_of_the_observed_state():
    env = make_env("ALE/Pong-v5", seed=0, render_mode="rgb_array")
    env.reset()
    prev = env.render()
    for t in range(20):  # the ball is served around step 14
        obs = env.step(t % 2)[0]
        frame = env.render()
        assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(obs, gist_prepro(frame) - gist_prepro(prev), f"step {t}")
        prev = frame


def test_karpathy_screen_equals_karpathy_preprocess_on_rgb_frames():
    # Two emulators in lockstep: one renders RGB as ale-py does for obs_type="rgb", the other
    # is read through its palette indices. Random actions over all 6 ALE actions, a game
    # played to its end and a reset mid-game: the reset screen has its own colors (background
    # 109 instead of 144), and the ball and opponent first appear some steps after a reset.
    rgb = KarpathyPreprocess(gym.make("ALE/Pong-v5"))
    screen = KarpathyScreen(gym.make("ALE/Pong-v5", obs_type="ram"))
    rng = np.random.default_rng(0)
    expected, _ = rgb.reset(seed=3)
    obs, _ = screen.reset(seed=3)
    games_over = 0
    for t in range(2500):
        assert obs.dtype == np.int8 and screen.observation_space.contains(obs), t
        np.testing.assert_array_equal(obs, expected, f"step {t}")
        action = rng.integers(6)
        expected, *rgb_rest, _ = rgb.step(action)
        obs, *rest, _ = screen.step(action)
        assert rest == rgb_rest, t  # reward, terminated, truncated: the emulators agree
        if rest[1] or rest[2] or t == 400:
            games_over += rest[1]
            expected, _ = rgb.reset()
            obs, _ = screen.reset()
    assert games_over >= 1


def test_karpathy_screen_learns_each_index_once_from_rgb():
    # A made-up palette over all 256 indices (some background reds), and screens whose new
    # indices appear mid-run, outside the crop, and in the odd columns the crop skips.
    rng = np.random.default_rng(0)
    palette = random_colors(rng, (256, 3))
    screens = np.zeros((7, 210, 160), dtype=np.uint8)
    screens[0] = rng.integers(0, 10, (210, 160))
    screens[1] = screens[0][::-1]  # the same indices: nothing to learn
    screens[2] = screens[0]
    screens[2, :35] = 200  # above the crop
    screens[2, 35:195, 1::2] = 201  # between the crop's columns
    screens[3] = rng.permutation(np.resize(np.arange(256), (210, 160)).ravel()).reshape(210, 160)
    screens[4:] = rng.integers(0, 256, (3, 210, 160))  # all known by now
    env = KarpathyScreen(FakeALEEnv(screens, palette))
    assert env.observation_space == spaces.Box(0, 1, (6400,), np.int8)

    observations = [env.reset()[0]] + [env.step(0)[0] for _ in screens[1:]]
    for t, (obs, indices) in enumerate(zip(observations, screens, strict=True)):
        np.testing.assert_array_equal(obs, gist_prepro(palette[indices]), f"screen {t}")
        assert env.observation_space.contains(obs)
    assert env.unwrapped.ale.rgb_screens == 2  # screens 0 and 3


def test_karpathy_screen_refuses_an_index_with_two_colors():
    palette = np.zeros((256, 3), dtype=np.uint8)
    env = FakeALEEnv(np.zeros((1, 210, 160), dtype=np.uint8), palette)
    rgb = np.zeros((210, 160, 3), dtype=np.uint8)
    rgb[101, 40, 0] = 236  # a cropped pixel; index 0 is background elsewhere in the frame
    env.ale.getScreenRGB = lambda: rgb
    with pytest.raises(RuntimeError, match="one palette index two colors"):
        KarpathyScreen(env).reset()


def test_karpathy_preprocess_alone_on_every_pixel_value():
    # Every value in every position, channels 1 and 2 and the cropped rows included, so the
    # lookup table is checked where real Pong frames never go.
    frame = random_colors(np.random.default_rng(0), FRAME_SPACE.shape)
    assert np.unique(frame[35:195:2, ::2, 0]).size == 256  # every red the crop keeps
    env = KarpathyPreprocess(ReplayEnv([frame], FRAME_SPACE))
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, gist_prepro(frame))
    assert obs.dtype == np.int8 and env.observation_space.contains(obs)
    np.testing.assert_array_equal(env.unwrapped.buffer, frame)  # input left untouched


def test_frame_difference_alone_and_cleared_on_reset():
    frames = np.random.default_rng(0).integers(0, 2, (4, 16), dtype=np.int8)
    env = FrameDifference(ReplayEnv(frames, spaces.Box(0, 1, (16,), np.int8)))
    assert env.observation_space == spaces.Box(-1, 1, (16,), np.int8)

    first, _ = env.reset()
    second = env.step(0)[0]
    third = env.step(0)[0]
    np.testing.assert_array_equal(first, np.zeros(16))
    # The wrapped env overwrites one buffer; differences must use the frame's old values.
    np.testing.assert_array_equal(second, frames[1] - frames[0])
    np.testing.assert_array_equal(third, frames[2] - frames[1])

    again, _ = env.reset()  # mid-episode
    np.testing.assert_array_equal(again, np.zeros(16))
    np.testing.assert_array_equal(env.step(0)[0], frames[1] - frames[0])
    for obs in (first, second, third, again):
        assert env.observation_space.contains(obs)


def test_frame_difference_cleared_on_reset_in_pong():
    env = make_env("ALE/Pong-v5", seed=0)
    env.reset()
    moved = [np.any(env.step(t % 2)[0]) for t in range(60)]
    assert any(moved)
    obs, _ = env.reset()
    assert obs.dtype == np.int8 and not np.any(obs)


def test_binary_action_map_alone():
    env = BinaryActionMap(ReplayEnv([np.zeros(1)], spaces.Box(0, 1, (1,)), spaces.Discrete(6)))
    assert env.action_space == spaces.Discrete(2)
    assert (env.action(1), env.action(0)) == (2, 3)
    assert (env.action(np.int64(1)), env.action(np.True_)) == (2, 2)
    with pytest.raises(ValueError, match="got 2"):
        env.action(2)


# --- Pong's actions by name (env.actions) -----------------------------------------------------

PLAYER_Y = 51  # Pong's RAM byte of the player's (right, green) paddle height; smaller is higher


def ale_actions_sent(env, actions):
    """The names of the ALE actions that ``env.step`` sends for ``actions``, read where ale-py's
    AtariEnv takes them (an index into its action set)."""
    atari, sent = env.unwrapped, []
    step = atari.step

    def spy(action, *args, **kwargs):
        sent.append(atari._action_set[action].name)
        return step(action, *args, **kwargs)

    atari.step = spy
    try:
        for action in actions:
            env.step(action)
    finally:
        del atari.step
    return sent


def test_pong_action_names_are_ales_minimal_set():
    env = gym.make("ALE/Pong-v5", obs_type="ram", repeat_action_probability=0.0)
    assert tuple(env.unwrapped.get_action_meanings()) == PONG_ACTIONS
    # RIGHT moves the player's paddle up, LEFT down, NOOP and FIRE leave it (the UP/DOWN aliases)
    moves = {}
    for name in PONG_ACTIONS:
        env.reset(seed=0)
        for _ in range(20):  # past the start of the game, paddle mid-screen
            env.step(0)
        before = int(env.unwrapped.ale.getRAM()[PLAYER_Y])
        for _ in range(2):
            env.step(PONG_ACTIONS.index(name))
        moves[name] = int(np.sign(int(env.unwrapped.ale.getRAM()[PLAYER_Y]) - before))
    assert moves == {
        "NOOP": 0, "FIRE": 0, "RIGHT": -1, "LEFT": 1, "RIGHTFIRE": -1, "LEFTFIRE": 1
    }  # fmt: skip


@pytest.mark.parametrize(
    "actions, sent",
    [
        (None, ["RIGHT", "LEFT"]),  # the default: 1 = UP, 0 = DOWN
        (["NOOP", "UP", "DOWN"], ["NOOP", "RIGHT", "LEFT"]),
        (["LEFT", "RIGHT"], ["LEFT", "RIGHT"]),  # 0 = DOWN, 1 = UP, as the default
        (list(PONG_ACTIONS), list(PONG_ACTIONS)),
        (["LEFTFIRE", "FIRE", "NOOP"], ["LEFTFIRE", "FIRE", "NOOP"]),
    ],
)
def test_pong_actions_reach_ale_by_name(actions, sent):
    env = make_env("ALE/Pong-v5", seed=0, actions=actions)
    n = int(env.action_space.n)
    assert n == (2 if actions is None else len(actions))
    order = [1, 0] if actions is None else list(range(n))
    assert ale_actions_sent(env, order + [np.int64(a) for a in order]) == sent + sent
    for bad in (n, -1):
        with pytest.raises(ValueError, match=f"got {bad}"):
            env.step(bad)
    env.close()


@pytest.mark.parametrize("actions", [["LEFT", "RIGHT"], ["DOWN", "UP"], ("DOWN", "RIGHT")])
def test_pong_default_actions_are_down_and_up(actions):
    """Without ``actions`` Pong is pgrl's binary env as it always was (BinaryActionMap); the
    names ``["DOWN", "UP"]`` give the same games, step for step."""
    default, named = make_env("ALE/Pong-v5"), make_env("ALE/Pong-v5", actions=actions)
    assert wrapper_stack(default)[:3] == [BinaryActionMap, FrameDifference, KarpathyScreen]
    assert wrapper_stack(named)[:3] == [ALEActionMap, FrameDifference, KarpathyScreen]
    assert make_env("ALE/Pong-v5", actions=[]).spec == default.spec
    np.testing.assert_array_equal(named.reset(seed=3)[0], default.reset(seed=3)[0])
    rewards = assert_same_steps(default, named, np.random.default_rng(0).integers(0, 2, 300))
    assert np.any(rewards)


def test_ale_action_map_alone():
    env = ALEActionMap(gym.make("ALE/Pong-v5", obs_type="ram"), ["NOOP", "RIGHT", "LEFT"])
    assert env.action_space == spaces.Discrete(3) and env.actions == ("NOOP", "RIGHT", "LEFT")
    assert [env.action(a) for a in (0, 1, 2, np.int64(2))] == [0, 2, 3, 3]
    # names, not numbers: the same actions in the full action set
    full = ALEActionMap(gym.make("ALE/Pong-v5", full_action_space=True), ["NOOP", "RIGHT", "LEFT"])
    assert [full.action(a) for a in range(3)] == [0, 3, 4]
    for wrap, message in [
        (lambda: ALEActionMap(gym.make("CartPole-v1"), ["NOOP"]), "needs an ale-py env"),
        (lambda: ALEActionMap(gym.make("ALE/Pong-v5"), ["UP"]), "no action 'UP' in this env"),
        (lambda: ALEActionMap(gym.make("ALE/Pong-v5"), ["FIRE", "FIRE"]), "'FIRE' is listed twice"),
        (lambda: ALEActionMap(gym.make("ALE/Pong-v5"), []), "takes a list of action names"),
        (lambda: ALEActionMap(gym.make("ALE/Pong-v5"), "NOOP"), "takes a list of action names"),
    ]:
        with pytest.raises(ValueError, match=message) as err:
            wrap()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"takes actions 0 to 2 \(NOOP, RIGHT, LEFT\), got 3"):
        env.action(3)


@pytest.mark.parametrize(
    "env_id, actions, message",
    [
        (
            "ALE/Pong-v5",
            ["NOOP", "JUMP"],
            "unknown action 'JUMP'; Pong's actions: NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE, "
            r"UP \(= RIGHT\), DOWN \(= LEFT\)$",
        ),
        (
            "ALE/Pong-v5",
            ["UP", "RIGHT"],
            "'RIGHT' is listed twice .* \\('UP' stands for 'RIGHT'\\)",
        ),
        ("ALE/Pong-v5", ["NOOP", "NOOP"], "'NOOP' is listed twice in \\['NOOP', 'NOOP'\\]$"),
        ("ALE/Pong-v5", ["UP"], "needs at least 2 actions, got \\['UP'\\]; Pong's actions: "),
        ("ALE/Pong-v5", "NOOP", "expected a list of Pong's action names"),
        ("ALE/Pong-v5", ["NOOP", 1], "expected a list of Pong's action names"),
        ("CartPole-v1", ["NOOP", "UP"], "for ALE/Pong-v5 only .*CartPole-v1 keeps its own"),
    ],
)
def test_bad_pong_actions(env_id, actions, message):
    with pytest.raises(ValueError, match=message) as err:
        make_env(env_id, actions=actions)
    assert "\n" not in str(err.value)


def test_pong_actions_through_vector_envs():
    """Both vectorizations build the named actions: in process, and through gymnasium's
    AsyncVectorEnv (env arguments pickled to a fresh process)."""
    for vectorization in ("sync", "async"):
        envs = make_vector_env(
            "ALE/Pong-v5", 2, 0, vectorization=vectorization, actions=["NOOP", "UP", "DOWN"]
        )
        try:
            assert envs.single_action_space == spaces.Discrete(3), vectorization
            envs.reset(seed=0)
            envs.step(np.array([2, 1]))
        finally:
            envs.close()


# --- CartPole --------------------------------------------------------------------------------


def test_cartpole_is_binary_and_seeded():
    env = make_env("CartPole-v1", seed=0)
    assert env.action_space == spaces.Discrete(2)
    obs, _ = env.reset()
    assert obs.shape == (4,) and env.observation_space.contains(obs)

    same = make_env("CartPole-v1", seed=0)
    np.testing.assert_array_equal(same.reset()[0], obs)
    assert not np.array_equal(make_env("CartPole-v1", seed=1).reset()[0], obs)
    # The action space is seeded too: random baselines repeat.
    assert [env.action_space.sample() for _ in range(20)] == [
        same.action_space.sample() for _ in range(20)
    ]


def test_cartpole_kwargs_pass_through():
    assert make_env("CartPole-v1", render_mode="rgb_array").render_mode == "rgb_array"


# --- bad input -------------------------------------------------------------------------------


def test_unknown_env_id():
    with pytest.raises(ValueError, match="'ALE/Pong-v4'") as err:
        make_env("ALE/Pong-v4")
    for env_id in SUPPORTED_ENV_IDS:
        assert env_id in str(err.value)
    assert "\n" not in str(err.value)


def test_check_binary_env_rejects_other_action_spaces():
    with pytest.raises(ValueError, match=r"MountainCar-v0 has action space Discrete\(3\)"):
        check_binary_env(gym.make("MountainCar-v0"))
    with pytest.raises(ValueError, match=r"Box\(-1\.0, 1\.0, \(1,\), float32\)"):
        check_binary_env(gym.make("MountainCarContinuous-v0"))
    cartpole = gym.make("CartPole-v1")
    assert check_binary_env(cartpole) is cartpole


@pytest.mark.parametrize(
    "wrapper, env_kwargs, bad_space",
    [
        (KarpathyPreprocess, {}, r"Box\(\[-4\.8"),  # CartPole's observations
        (KarpathyPreprocess, {"obs_type": "grayscale"}, r"Box\(0, 255, \(210, 160\), uint8\)"),
        (FrameDifference, {}, r"Box\(0, 255, \(210, 160, 3\), uint8\)"),  # raw frames
        (BinaryActionMap, {}, r"Discrete\(2\)"),  # CartPole's actions
        (BinaryActionMap, {"full_action_space": True}, "'UP', 'RIGHT'"),
    ],
)
def test_wrappers_reject_wrong_spaces(wrapper, env_kwargs, bad_space):
    env_id = "ALE/Pong-v5" if env_kwargs or wrapper is FrameDifference else "CartPole-v1"
    env = gym.make(env_id, **env_kwargs)
    with pytest.raises(ValueError, match=bad_space):
        wrapper(env)


def test_karpathy_screen_rejects_non_ale_envs():
    with pytest.raises(ValueError, match=r"needs an ale-py env .* got CartPoleEnv") as err:
        KarpathyScreen(gym.make("CartPole-v1"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("obs_type", ["rgb", "ram"])
def test_pong_obs_type_is_make_envs_own(obs_type):
    with pytest.raises(ValueError, match=f"takes no obs_type \\(got '{obs_type}'\\)") as err:
        make_env("ALE/Pong-v5", obs_type=obs_type)
    assert "\n" not in str(err.value)


def test_missing_ale_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` raise ImportError
    with pytest.raises(ImportError, match=r"install pgrl\[atari\]") as err:
        make_env("ALE/Pong-v5")
    assert "\n" not in str(err.value)
    make_env("CartPole-v1")  # the rest of pgrl does not need ale-py


# --- gymnasium API ---------------------------------------------------------------------------

# Each pgrl wrapper alone on the ALE env it expects, and make_env's whole stack; **kwargs go to
# gym.make.
WRAPPED_PONG = {
    "KarpathyPreprocess": lambda **kwargs: KarpathyPreprocess(gym.make("ALE/Pong-v5", **kwargs)),
    "KarpathyScreen": lambda **kwargs: KarpathyScreen(
        gym.make("ALE/Pong-v5", obs_type="ram", **kwargs)
    ),
    "FrameDifference": lambda **kwargs: FrameDifference(
        KarpathyScreen(gym.make("ALE/Pong-v5", obs_type="ram", **kwargs))
    ),
    "BinaryActionMap": lambda **kwargs: BinaryActionMap(
        gym.make("ALE/Pong-v5", obs_type="ram", **kwargs)
    ),
    "ALEActionMap": lambda **kwargs: ALEActionMap(
        gym.make("ALE/Pong-v5", obs_type="ram", **kwargs), ["NOOP", "RIGHT", "LEFT"]
    ),
    "make_env": lambda **kwargs: make_env("ALE/Pong-v5", **kwargs),
    "make_env-actions": lambda **kwargs: make_env("ALE/Pong-v5", actions=PONG_ACTIONS, **kwargs),
}


def wrapper_stack(env):
    """The env's layers, outermost first, as types."""
    layers = [type(env)]
    while isinstance(env, gym.Wrapper):
        env = env.env
        layers.append(type(env))
    return layers


def assert_same_steps(env, twin, actions):
    """Step both envs (or vector envs) with ``actions``; return env's rewards, (len(actions), ...).

    Asserts equal observations, rewards, terminated and truncated at every step; single envs are
    reset together at episode ends (vector envs reset themselves)."""
    rewards = []
    for t, action in enumerate(actions):
        step = env.step(action)
        for name, value, twin_value in zip(
            ("obs", "reward", "terminated", "truncated"), step, twin.step(action), strict=False
        ):
            np.testing.assert_array_equal(twin_value, value, err_msg=f"{name}, step {t}")
        _, reward, terminated, truncated, _ = step
        if not isinstance(env, gym.vector.VectorEnv) and (terminated or truncated):
            np.testing.assert_array_equal(twin.reset()[0], env.reset()[0], f"reset after {t}")
        rewards.append(reward)
    return np.array(rewards)


@pytest.fixture
def headless_sdl(monkeypatch):
    """check_env builds every render mode: ALE's "human" must open no window or sound device."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


@pytest.mark.parametrize(
    "env_id, kwargs, expected_warnings",
    [
        # CartPole's own observation space: its velocities are unbounded.
        ("CartPole-v1", {}, ["different from the unwrapped", "infinity", "infinity"]),
        ("ALE/Pong-v5", {}, ["different from the unwrapped"]),
        ("ALE/Pong-v5", {"actions": ["NOOP", "UP", "DOWN"]}, ["different from the unwrapped"]),
    ],
)
def test_check_env_passes(env_id, kwargs, expected_warnings, headless_sdl):
    # check_env also rebuilds the env from env.spec (once per render mode, and to test close()),
    # which needs every wrapper's constructor arguments.
    env = make_env(env_id, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    # The warning every wrapped env gets is that check_env prefers env.unwrapped.
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(expected_warnings), messages
    for message, expected in zip(messages, expected_warnings, strict=True):
        assert expected in message


def test_vector_env_sub_envs_rebuild_from_their_spec(headless_sdl):
    # gymnasium's own vector env from a sub-env's spec builds each sub-env as the unwrapped ALE
    # env with pgrl's wrappers re-applied: same stack, same steps, and check_env passes on it.
    vec = gym.vector.SyncVectorEnv([functools.partial(make_env, "ALE/Pong-v5")] * 2)
    twin = gym.make_vec(vec.envs[1].spec, num_envs=2, vectorization_mode="sync")
    assert [wrapper_stack(env) for env in twin.envs] == [wrapper_stack(env) for env in vec.envs]
    with pytest.warns(UserWarning, match="different from the unwrapped"):  # its only warning
        check_env(twin.envs[1])

    np.testing.assert_array_equal(twin.reset(seed=3)[0], vec.reset(seed=3)[0])
    actions = np.random.default_rng(0).integers(0, 2, (150, 2))
    rewards = assert_same_steps(vec, twin, actions)
    assert np.any(rewards)  # a point was scored: rewards were compared, not just zeros


@pytest.mark.parametrize(
    "make",
    [
        *WRAPPED_PONG.values(),
        # Truncated at steps 150 and 300; the first point comes at step 128.
        functools.partial(make_env, "ALE/Pong-v5", frameskip=2, max_episode_steps=150),
        functools.partial(make_env, "CartPole-v1"),
    ],
    ids=[*WRAPPED_PONG, "make_env-kwargs", "CartPole"],
)
def test_spec_rebuilds_the_same_env(make):
    env = make()
    # Through JSON, as a spec saved next to a checkpoint would come back.
    spec = EnvSpec.from_json(env.spec.to_json())
    rebuilt = gym.make(spec)
    assert wrapper_stack(rebuilt) == wrapper_stack(env)
    assert rebuilt.spec == env.spec
    for wrapper_spec in spec.additional_wrappers:  # entry points a fresh process can import
        assert wrapper_spec.entry_point == f"pgrl.envs:{wrapper_spec.name}"

    np.testing.assert_array_equal(rebuilt.reset(seed=3)[0], env.reset(seed=3)[0])
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 300)
    rewards = assert_same_steps(env, rebuilt, actions)
    assert np.any(rewards)


@pytest.mark.parametrize("name", WRAPPED_PONG)
def test_copies_behave_like_the_original_mid_game(name):
    """A pickled or deep-copied env steps like the original from the same emulator state.

    ale-py rebuilds its emulator from constructor arguments, so the copy's game is restored
    through ALE; the wrappers' own state (FrameDifference's previous frame, KarpathyScreen's
    learned table, and its buffer rebound to the copy's ALE) comes with the copy.
    """
    # ALE's saved state leaves out the last action, which sticky actions would repeat.
    env = WRAPPED_PONG[name](repeat_action_probability=0.0)
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    for action in rng.integers(0, env.action_space.n, 40):  # the ball in play
        env.step(action)

    for copy_env in (lambda original: pickle.loads(pickle.dumps(original)), copy.deepcopy):
        clone = copy_env(env)  # here, not before the loop: from the state env has now
        assert wrapper_stack(clone) == wrapper_stack(env)
        if KarpathyScreen in wrapper_stack(env):  # it keeps the spec ale-py's EzPickle drops
            assert clone.spec == env.spec
        clone.unwrapped.restore_state(env.unwrapped.clone_state(include_rng=True))
        rewards = assert_same_steps(env, clone, rng.integers(0, env.action_space.n, 150))
        assert np.any(rewards)
        clone.close()
    env.close()


def test_pong_env_pickles_and_deep_copies():
    """ale-py rebuilds its env on unpickling; KarpathyScreen rebinds its screen buffer to the new
    ALE, so a copy gives the original's observations after the same seeded reset."""
    env = make_env("ALE/Pong-v5")
    for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        a, _ = env.reset(seed=3)
        b, _ = clone.reset(seed=3)
        np.testing.assert_array_equal(a, b)
        for t in range(60):
            a, *_ = env.step(t % 2)
            b, *_ = clone.step(t % 2)
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        assert np.count_nonzero(a) > 0  # the game is on screen, not a stale buffer
        clone.close()
    env.close()


@pytest.mark.parametrize("mode", [1, ["rgb_array"], b"rgb_array"])
def test_a_render_mode_that_is_no_string_is_refused(mode):
    """gymnasium calls string methods on render_mode: anything else is refused first."""
    with pytest.raises(ValueError, match=r"^render_mode must be a string such as 'rgb_array'"):
        make_env("CartPole-v1", render_mode=mode)

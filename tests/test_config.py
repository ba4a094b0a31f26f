"""Config loading: defaults, overrides, and one clear line for every mistake."""

import tomllib

import pytest

from pgrl.config import Config, ConfigError, from_dict, load_config


def test_shipped_configs_load():
    cartpole = load_config("configs/cartpole.toml")
    assert cartpole.env.id == "CartPole-v1" and cartpole.train.solved_mean100 == 475
    pong = load_config("configs/pong.toml")
    # Karpathy's hyperparameters
    assert pong.env.id == "ALE/Pong-v5"
    assert pong.policy.hidden_sizes == [200] and not pong.policy.bias
    assert pong.train.batch_episodes == 10 and pong.train.gamma == 0.99
    assert pong.train.reset_on_nonzero and pong.train.standardize == "episode"
    assert pong.optimizer.learning_rate == 1e-4 and pong.optimizer.decay == 0.99
    assert pong.optimizer.epsilon == 1e-5 and not pong.optimizer.epsilon_inside_sqrt
    # pgrl's recipe: Karpathy's with a 10x learning rate, float32 (the shipped agent's dtype)
    fast = load_config("configs/pong_fast.toml")
    assert fast.optimizer.learning_rate == 1e-3 and fast.policy.dtype == "float32"
    assert fast.env == pong.env and fast.policy.hidden_sizes == pong.policy.hidden_sizes
    for key in ("batch_episodes", "gamma", "reset_on_nonzero", "standardize"):
        assert getattr(fast.train, key) == getattr(pong.train, key), key


def test_overrides_are_typed():
    cfg = load_config(
        "configs/cartpole.toml",
        [
            "policy.backend=tensorflow",
            "train.seed=7",
            "policy.hidden_sizes=[16, 8]",
            "optimizer.learning_rate=1e-3",
            "env.kwargs={max_episode_steps = 100}",
        ],
    )
    assert cfg.policy.backend == "tensorflow" and cfg.train.seed == 7
    assert cfg.policy.hidden_sizes == [16, 8]
    assert cfg.optimizer.learning_rate == 1e-3
    assert cfg.env.kwargs == {"max_episode_steps": 100}


def test_resolved_config_round_trips_through_toml():
    cfg = load_config("configs/pong.toml", ["train.max_seconds=60"])
    again = from_dict(tomllib.loads(cfg.to_toml()))
    assert again == cfg
    assert Config() == from_dict({})


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "policy.hiden_sizes=[3]",
            "unknown key 'policy.hiden_sizes' (did you mean 'policy.hidden_sizes'?)",
        ),
        ("polcy.backend=numpy", "unknown key 'polcy' (did you mean 'policy'?)"),
        ("train.seed=abc", "'train.seed' must be int, got 'abc'"),
        ("train.seed=1.5", "'train.seed' must be int, got 1.5"),
        ("policy.bias=1", "'policy.bias' must be bool, got 1"),
        ("optimizer.learning_rate=0", "'optimizer.learning_rate' must be > 0, got 0.0"),
        ("optimizer.learning_rate=-1e-3", "'optimizer.learning_rate' must be > 0"),
        ("train.gamma=0", "'train.gamma' must be in (0, 1], got 0.0"),
        ("train.gamma=1.01", "'train.gamma' must be in (0, 1]"),
        ("policy.hidden_sizes=[32, 0]", "'policy.hidden_sizes' must be a list of sizes >= 1"),
        ("env.num_envs=0", "'env.num_envs' must be >= 1, got 0"),
        ("policy.backend=torch", "'policy.backend' must be one of numpy, tensorflow, got 'torch'"),
        ("env.id=Breakout", "'env.id' must be one of CartPole-v1, ALE/Pong-v5, got 'Breakout'"),
        ("policy.dtype=float16", "'policy.dtype' must be one of float32, float64"),
        ("train.standardize=global", "'train.standardize' must be one of episode, batch, none"),
        ("seed=3", "expected section.key=value"),
    ],
)
def test_bad_values_name_the_key_and_the_file(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/cartpole.toml", [override])
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    if not override.startswith("seed="):
        assert text.startswith("configs/cartpole.toml: ")


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such config file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nseed = 1\nepisodes = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: TOML syntax error: .*line 3"):
        load_config(bad)
    section = tmp_path / "section.toml"
    section.write_text("train = 3\n")
    with pytest.raises(ConfigError, match=r"'train' must be a table"):
        load_config(section)

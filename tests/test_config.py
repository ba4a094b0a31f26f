"""Config loading: defaults, overrides, and one clear line for every mistake."""

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

import pgrl
from pgrl.cli import main as cli_main
from pgrl.config import (
    Config,
    ConfigError,
    EnvConfig,
    LogConfig,
    OptimizerConfig,
    PolicyConfig,
    TrainConfig,
    config_path,
    from_dict,
    load_config,
    parse_override,
    shipped_configs,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DIR = Path(pgrl.__file__).parent / "configs"


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
    # pong_fast's recipe with the categorical head over stay, up and down
    full = load_config("configs/pong_full.toml")
    assert full.env.actions == ["NOOP", "UP", "DOWN"]
    assert full.policy.head == "categorical"
    full.env.actions, full.policy.head = fast.env.actions, fast.policy.head
    assert full == fast


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
        ("optimizer.decay=1", "'optimizer.decay' must be in [0, 1), got 1.0"),
        ("optimizer.epsilon=inf", "'optimizer.epsilon' must be finite, got inf"),
        ("optimizer.epsilon_inside_sqrt=0", "'optimizer.epsilon_inside_sqrt' must be bool, got 0"),
        ("train.gamma=0", "'train.gamma' must be in (0, 1], got 0.0"),
        ("train.gamma=1.01", "'train.gamma' must be in (0, 1]"),
        ("policy.hidden_sizes=[32, 0]", "'policy.hidden_sizes' must be a list of sizes >= 1"),
        ("env.num_envs=0", "'env.num_envs' must be >= 1, got 0"),
        ("policy.backend=torch", "'policy.backend' must be one of numpy, tensorflow, got 'torch'"),
        (
            "env.id=Breakout",
            "'env.id' must be one of CartPole-v1, ALE/Pong-v5 or a registered gymnasium env id, "
            "got 'Breakout'",
        ),
        ("policy.dtype=float16", "'policy.dtype' must be one of float32, float64"),
        ("policy.head=softmax", "'policy.head' must be one of bernoulli, categorical"),
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


def test_env_actions_are_make_envs_argument():
    """``env.actions`` joins ``env.kwargs`` as the arguments every path passes to make_env; the
    resolved config writes it back."""
    cfg = load_config("pong", ['env.actions=["DOWN", "UP"]', "env.kwargs={frameskip = 2}"])
    assert cfg.env.make_kwargs() == {"frameskip": 2, "actions": ["DOWN", "UP"]}
    assert 'actions = ["DOWN", "UP"]' in cfg.to_toml()
    assert from_dict(tomllib.loads(cfg.to_toml())) == cfg
    # empty is the default (binary) Pong
    default = load_config("pong_full", ["env.actions=[]", "policy.head=bernoulli"])
    assert default.env == load_config("pong").env
    assert default.env.make_kwargs() == {}


VALID_ACTIONS = "NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE, UP (= RIGHT), DOWN (= LEFT)"


@pytest.mark.parametrize(
    "config, override, message",
    [
        (
            "pong_full",
            'env.actions=["NOOP", "JUMP"]',
            f"unknown action 'JUMP'; Pong's actions: {VALID_ACTIONS}",
        ),
        (
            "pong_full",
            'env.actions=["UP", "RIGHT"]',
            "action 'RIGHT' is listed twice in ['UP', 'RIGHT'] ('UP' stands for 'RIGHT')",
        ),
        (
            "pong_full",
            'env.actions=["UP"]',
            f"needs at least 2 actions, got ['UP']; Pong's actions: {VALID_ACTIONS}",
        ),
        ("pong", "env.kwargs={actions = [1, 2]}", "give the actions as env.actions"),
        (
            "cartpole",
            'env.actions=["NOOP", "UP"]',
            f"action names are for ALE/Pong-v5 only ({VALID_ACTIONS}); CartPole-v1",
        ),
        ("pong_full", "env.action=[]", "unknown key 'env.action' (did you mean 'env.actions'?)"),
    ],
)
def test_bad_env_actions_name_the_key_and_the_valid_names(config, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(config, [override])
    text = str(err.value)
    assert text.startswith(f"{config}: ") and message in text and "\n" not in text
    if "unknown key" not in message:
        assert text.startswith(f"{config}: 'env.actions': ")


def test_env_actions_of_the_wrong_type():
    message = "^pong_full: 'env.actions' must be list of str, got 'UP'$"
    with pytest.raises(ConfigError, match=message):
        load_config("pong_full", ["env.actions=UP"])


def test_bernoulli_head_with_three_pong_actions_is_one_line():
    with pytest.raises(ConfigError) as err:
        load_config("pong_full", ["policy.head=bernoulli"])
    assert str(err.value) == (
        "pong_full: policy.head = 'bernoulli' needs 2 actions, but env.actions has 3 "
        "(NOOP, UP, DOWN); set policy.head = 'categorical'"
    )
    two = load_config("pong_fast", ['env.actions=["NOOP", "UP"]'])  # 2 names suit either head
    assert two.policy.head == "bernoulli"


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such config file; shipped configs: "):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nseed = 1\nepisodes = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: TOML syntax error: .*line 3"):
        load_config(bad)
    section = tmp_path / "section.toml"
    section.write_text("train = 3\n")
    with pytest.raises(ConfigError, match=r"'train' must be a table"):
        load_config(section)


@pytest.mark.parametrize("file", sorted(SHIPPED_DIR.glob("*.toml")), ids=lambda f: f.name)
def test_every_shipped_file_loads_by_path_and_by_name(file):
    cfg = load_config(file)
    assert cfg == load_config(file.stem) == load_config(file.name)
    ids = ("CartPole-v1", "ALE/Pong-v5", "Acrobot-v1", "LunarLander-v3", "Pendulum-v1")
    ids += ("InvertedPendulum-v5", "HalfCheetah-v5")
    assert cfg.train.episodes >= 1 and cfg.env.id in ids


def test_shipped_names_and_the_repository_link():
    assert shipped_configs() == sorted(f.stem for f in SHIPPED_DIR.glob("*.toml"))
    assert {"cartpole", "pong", "pong_fast", "pong_full"} <= set(shipped_configs())
    # the documented configs/ paths are the package's files
    assert (ROOT / "configs").resolve() == SHIPPED_DIR.resolve()
    assert config_path("pong") == SHIPPED_DIR / "pong.toml"


def test_names_work_from_any_directory_and_files_come_first(tmp_path, monkeypatch):
    expected = load_config(ROOT / "configs" / "cartpole.toml", ["train.seed=4"])
    monkeypatch.chdir(tmp_path)
    assert load_config("cartpole", ["train.seed=4"]) == expected
    assert load_config("cartpole.toml", ["train.seed=4"]) == expected
    # an existing file is used as given, even where its name is a shipped one
    (tmp_path / "cartpole.toml").write_text("[train]\nseed = 5\n")
    assert config_path("cartpole.toml") == Path("cartpole.toml")
    assert load_config("cartpole.toml").train.seed == 5
    assert load_config("cartpole").train.seed == 0  # no file "cartpole": the shipped one


def test_config_path_reasons(tmp_path, monkeypatch):
    names = ", ".join(shipped_configs())
    with pytest.raises(ConfigError) as err:
        config_path("pongfast")
    assert str(err.value) == (
        "pongfast: no such config file or shipped config name (did you mean 'pong_fast'?); "
        f"shipped configs: {names}"
    )
    with pytest.raises(ConfigError) as err:
        config_path("zzz")
    assert (
        str(err.value)
        == f"zzz: no such config file or shipped config name; shipped configs: {names}"
    )
    with pytest.raises(ConfigError, match=r"is a directory, not a config file$"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"^/dev/null: is a character device, not a config file$"):
        load_config("/dev/null")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pong").mkdir()
    assert config_path("pong") == SHIPPED_DIR / "pong.toml"  # a name, though a directory too


def test_lunarlander_ships_as_lunarlander_ppo_only(capsys, monkeypatch):
    # a shipped config solves 9 of 10 unseen seeds; REINFORCE's LunarLander recipe solved 7
    monkeypatch.chdir(ROOT)
    names = ", ".join(shipped_configs())
    hint = "(did you mean 'lunarlander_ppo'?); shipped configs: " + names
    with pytest.raises(ConfigError) as err:
        load_config("configs/lunarlander.toml")
    assert str(err.value) == f"configs/lunarlander.toml: no such config file {hint}"
    assert cli_main(["train", "lunarlander"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"pgrl train: error: lunarlander: no such config file or shipped config name {hint}\n"
    )


def test_the_reinforce_lunarlander_recipe_in_the_results_loads(tmp_path):
    text = (ROOT / "docs" / "results.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    recipe = tmp_path / "lunarlander_reinforce.toml"
    recipe.write_text(block)
    cfg = load_config(recipe)
    assert (cfg.env.id, cfg.train.algorithm, cfg.train.baseline, cfg.train.gamma) == (
        "LunarLander-v3",
        "reinforce",
        "value",
        0.995,
    )


@pytest.mark.parametrize(
    "cfg, message",
    [
        (Config(train=TrainConfig(episodes=-5)), "'train.episodes' must be >= 1, got -5"),
        (Config(train=TrainConfig(seed="3")), "'train.seed' must be int, got '3'"),
        (Config(train=TrainConfig(gamma=float("nan"))), "'train.gamma' must be in (0, 1], got nan"),
        (Config(train=TrainConfig(max_steps=2.5)), "'train.max_steps' must be int, got 2.5"),
        (Config(env=EnvConfig(id="Pong")), "'env.id' must be one of CartPole-v1, ALE/Pong-v5"),
        (Config(env=EnvConfig(kwargs=None)), "'env.kwargs' must be table, got None"),
        (
            Config(policy=PolicyConfig(hidden_sizes=[32, "8"])),
            "'policy.hidden_sizes' must be list of int, got [32, '8']",
        ),
        (Config(policy=PolicyConfig(hidden_sizes=32)), "'policy.hidden_sizes' must be list of int"),
        (Config(policy=PolicyConfig(dtype="float16")), "'policy.dtype' must be one of float32"),
        (
            Config(optimizer=OptimizerConfig(learning_rate="1e-3")),
            "'optimizer.learning_rate' must be float, got '1e-3'",
        ),
        (
            Config(optimizer=OptimizerConfig(learning_rate=0.0)),
            "'optimizer.learning_rate' must be > 0, got 0.0",
        ),
        (
            Config(optimizer=OptimizerConfig(decay=True)),
            "'optimizer.decay' must be float, got True",
        ),
        (Config(log=LogConfig(progress=1)), "'log.progress' must be bool, got 1"),
        (Config(train={"episodes": 5}), "'train' must be a TrainConfig, got {'episodes': 5}"),
    ],
)
def test_validate_names_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        cfg.validate("my.toml")
    assert str(err.value).startswith("my.toml: " + message), str(err.value)
    with pytest.raises(ConfigError, match=r"^config: '"):
        cfg.validate()


def test_validate_returns_the_config_with_toml_types():
    cfg = Config(
        policy=PolicyConfig(hidden_sizes=(16, np.int64(8))),
        optimizer=OptimizerConfig(learning_rate=1),
        train=TrainConfig(seed=np.int64(3), gamma=np.float32(0.5)),
    )
    assert cfg.validate() is cfg
    assert cfg.policy.hidden_sizes == [16, 8] and type(cfg.policy.hidden_sizes[1]) is int
    assert type(cfg.optimizer.learning_rate) is float and type(cfg.train.seed) is int
    assert type(cfg.train.gamma) is float and cfg.train.gamma == 0.5
    assert from_dict(tomllib.loads(cfg.to_toml())) == cfg
    assert Config().validate() == Config()


@pytest.mark.parametrize(
    "value, expected",
    [
        (np.float64(0.9), 0.9),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7),
        (np.int32(-3), -3),
        (np.bool_(True), True),
        (np.str_("rgb_array"), "rgb_array"),
        (np.array([8, 4]), [8, 4]),
        (np.array(2.5), 2.5),
        ((8, np.int64(4)), [8, 4]),
        ([np.float64(1.5), np.bool_(False)], [1.5, False]),
    ],
    ids=repr,
)
def test_numpy_values_are_written_as_toml(value, expected):
    """A config that holds NumPy values (from the Python API, before validation; or in
    env.kwargs, which pass to the env as they are) writes TOML that reads back to them."""
    cfg = Config()
    cfg.env.kwargs = {"x": value}
    cfg.train.gamma = np.float64(0.9)
    cfg.train.seed = np.int64(7)
    cfg.policy.bias = np.bool_(True)
    back = tomllib.loads(cfg.to_toml())
    assert back["env"]["kwargs"] == {"x": expected}
    assert (back["train"]["gamma"], back["train"]["seed"], back["policy"]["bias"]) == (0.9, 7, True)
    assert type(back["train"]["seed"]) is int and type(back["policy"]["bias"]) is bool


def test_strings_and_keys_that_need_escapes_are_written_as_toml():
    cfg = Config()
    text = 'a\nb\tc\r\x00\x1b[2K\x7f"quoted" \\ back é'
    cfg.train.init = text
    cfg.env.kwargs = {"a b": 1, "a.b": 2, "": 3, "é": 4, 'q"': 5, "plain_key-1": 6}
    back = tomllib.loads(cfg.to_toml())
    assert back["train"]["init"] == text
    assert back["env"]["kwargs"] == cfg.env.kwargs
    assert "plain_key-1 = 6" in cfg.to_toml()  # bare keys stay bare


def test_a_huge_unknown_key_is_cut_in_the_message(tmp_path):
    bad = tmp_path / "long.toml"
    bad.write_text("[train]\n" + "k" * 100_000 + " = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert text.startswith(f"{bad}: unknown key 'train.kkk") and len(text) < 300, text[:300]
    assert "(100,008 chars)" in text


@pytest.mark.parametrize("body", ["[[train]]\nseed = 1\n", "train = 3\n"])
def test_a_section_that_is_no_table_is_named_with_its_file_under_set(tmp_path, body):
    """``--set train.episodes=40`` cannot go into a file's ``[[train]]``: the file is named."""
    bad = tmp_path / "cfg.toml"
    bad.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(bad, ["train.episodes=40"])
    got = str(err.value)
    assert got.startswith(f"{bad}: 'train' must be a table [train], got "), got


@pytest.mark.parametrize(
    "text, flag, message",
    [
        (".seed=1", "--set", "--set '.seed=1': expected section.key=value, e.g. train.seed=3"),
        ("train.=1", "--set", "--set 'train.=1': expected section.key=value, e.g. train.seed=3"),
        (" . =1", "--set", "--set ' . =1': expected section.key=value, e.g. train.seed=3"),
        (
            "episodes=10,20",
            "--grid",
            "--grid 'episodes=10,20': expected section.key=v1,v2,..., "
            "e.g. optimizer.learning_rate=3e-3,1e-2",
        ),
    ],
)
def test_overrides_without_a_section_or_a_key_name_their_flag(text, flag, message):
    with pytest.raises(ConfigError) as err:
        parse_override(text, flag=flag)
    assert str(err.value) == message


def test_a_removed_key_says_what_replaced_it(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('[env]\nid = "CartPole-v1"\nvectorization = "workers"\n')
    hint = r'env.vectorization is no longer a key: .*env.runner = "processes"'
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {hint}"):
        load_config(path)
    with pytest.raises(ConfigError, match=hint):
        load_config("cartpole", ["env.vectorization=workers"])


def test_a_run_whose_config_has_a_removed_key_still_resumes(tmp_path):
    """A run's stored config (its checkpoint's) may name keys pgrl no longer has: ignored."""
    from pgrl.reinforce import train

    quiet = ["log.progress=false", "train.batch_episodes=10"]
    out = tmp_path / "run"
    train(load_config("cartpole", ["train.episodes=20", *quiet]), out=out)
    data = dict(np.load(out / "checkpoint.npz"))
    stored = str(data["config"])
    assert "[env]\n" in stored
    data["config"] = np.array(stored.replace("[env]\n", '[env]\nvectorization = "auto"\n', 1))
    np.savez(out / "checkpoint.npz", **data)
    summary = train(load_config("cartpole", ["train.episodes=40", *quiet]), out=out, resume=True)
    assert summary["episodes"] == 40

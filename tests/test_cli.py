"""The pgrl command: shipped configs by name from any directory, one-line errors, --version."""

import csv
import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from zipedit import zip_field

import pgrl
from pgrl.cli import main as cli_main
from pgrl.config import load_config, shipped_configs

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pgrl.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def one_line_error(capsys, argv) -> str:
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    return lines[0]


def test_train_by_name_from_another_directory(tmp_path):
    result = run_cli(
        "train",
        "cartpole",
        "--set",
        "train.episodes=20",
        "--set",
        "log.progress=false",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["episode"]) for r in rows] == list(range(1, 21))
    assert json.loads(result.stdout)["episodes"] == 20
    # the shipped file, not defaults: its 32-unit layer with biases and 20 envs
    written = load_config(tmp_path / "run" / "config.toml")
    assert written == load_config("cartpole", ["train.episodes=20", "log.progress=false"])
    assert written.policy.hidden_sizes == [32] and written.env.num_envs == 20


def test_compare_by_name_from_another_directory(tmp_path):
    result = run_cli(
        "compare",
        "cartpole",
        "--backends",
        "numpy",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--set",
        "train.episodes=5",
        "--out",
        "cmp",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert [row[k] for k in ("backend", "seed", "status", "episodes")] == ["numpy", "0", "ok", "5"]


@pytest.mark.parametrize("command", ["train", "compare", "check"])
def test_unknown_name_lists_the_shipped_configs(capsys, command):
    line = one_line_error(capsys, [command, "cartpol"])
    assert line == (
        f"pgrl {command}: error: cartpol: no such config file or shipped config name "
        "(did you mean 'cartpole'?); shipped configs: " + ", ".join(shipped_configs())
    )
    assert shipped_configs() == [
        "acrobot",
        "acrobot_ppo",
        "cartpole",
        "cartpole_ppo",
        "halfcheetah_ppo",
        "invertedpendulum_ppo",
        "lunarlander_ppo",
        "pendulum_ppo",
        "pong",
        "pong_fast",
        "pong_full",
        "pong_ppo",
    ]


def test_a_path_is_not_looked_up_as_a_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    line = one_line_error(capsys, ["train", "configs/cartpole.toml"])
    assert line.startswith(
        "pgrl train: error: configs/cartpole.toml: no such config file (did you mean 'cartpole'?)"
    )


def test_a_directory_is_no_config(capsys, tmp_path):
    line = one_line_error(capsys, ["train", str(tmp_path)])
    assert line == f"pgrl train: error: {tmp_path}: is a directory, not a config file"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_dev_null_is_no_config(capsys):
    line = one_line_error(capsys, ["check", "/dev/null"])
    assert line == "pgrl check: error: /dev/null: is a character device, not a config file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_without_reading_it(capsys, tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)  # reading it would block forever
    line = one_line_error(capsys, ["train", str(fifo)])
    assert line == f"pgrl train: error: {fifo}: is a named pipe, not a config file"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pgrl {pgrl.__version__}\n"
    # one source: pyproject.toml's version, through the installed metadata
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert pgrl.__version__ == metadata.version("pgrl") == declared, (
        "installed metadata differs from pyproject.toml: reinstall (pip install -e .)"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "cartpole", "--backends", "numpy", "--seeds", "0", "--workers", "1"],
        ["sweep", "cartpole", "--grid", "train.gamma=0.9", "--workers", "1"],
    ],
)
def test_empty_out_is_refused_by_compare_and_sweep(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, [*argv, "--set", "train.episodes=20", "--out", ""])
    assert line == f"pgrl {argv[0]}: error: --out: empty path; give a directory for the results"
    assert list(tmp_path.iterdir()) == []


# Makes any import of NumPy raise KeyboardInterrupt, as a Ctrl-C during start-up would, then
# runs the module named by argv[1] as `python -m` does.
CTRL_C_AT_IMPORT = """
import runpy, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module", ["pgrl.cli", "pgrl"])
def test_ctrl_c_while_importing_is_one_line(module, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_AT_IMPORT, module, "train", "cartpole", "--out", "run"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert result.stderr == "pgrl: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_pgrl_is_the_pgrl_command(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    result_m = subprocess.run(
        [sys.executable, "-m", "pgrl", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result_m.returncode == result.returncode == 0, result_m.stderr
    assert result_m.stdout == result.stdout == f"pgrl {pgrl.__version__}\n"


def test_a_closed_stdout_ends_quietly(tmp_path):
    """``pgrl check cartpole | head -1``: the reader is gone before pgrl writes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgrl.cli", "check", "cartpole"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_an_unforeseen_os_error_is_one_line(capsys, monkeypatch):
    import errno

    import pgrl.play

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "weights.npz")

    monkeypatch.setattr(pgrl.play, "evaluate", fail)
    assert cli_main(["eval", "pong"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == ["pgrl eval: error: [Errno 5] Input/output error: 'weights.npz'"], captured


def _nested(depth: int, open_: str = "[", close: str = "]", inner: str = "") -> str:
    return open_ * depth + inner + close * depth


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "{deep}", "--out", "{out}"], "TOML nested too deeply to read"),
        (["check", "{deep}"], "TOML nested too deeply to read"),
        (["train", "cartpole", "--out", "{out}", "--set", "policy.hidden_sizes={list}"],
         "value nested too deeply"),
        (["check", "cartpole", "--set", "policy.hidden_sizes={list}"], "value nested too deeply"),
        (["sweep", "cartpole", "--out", "{out}", "--seeds", "0",
          "--grid", "policy.hidden_sizes={list}"], "value nested too deeply"),
    ],
)  # fmt: skip
def test_deeply_nested_toml_is_one_line(tmp_path, capsys, argv, expected):
    """tomllib recurses once per level: a config or a value nested thousands deep is refused
    with one line, not a RecursionError."""
    deep = tmp_path / "deep.toml"
    deep.write_text(f"x = {_nested(5000)}\n[env]\nkwargs = {_nested(2000, '{a=', '}', '1')}\n")
    values = {"{deep}": str(deep), "{out}": str(tmp_path / "run"), "{list}": _nested(1000)}
    for key, value in values.items():
        argv = [a.replace(key, value) for a in argv]
    line = one_line_error(capsys, argv)
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_unknown_env_version_names_the_registered_one(capsys, tmp_path):
    line = one_line_error(
        capsys, ["train", "cartpole", "--out", str(tmp_path / "run"), "--set", "env.id=Taxi-v3"]
    )
    assert "unknown env id 'Taxi-v3' (gymnasium has Taxi-v4)" in line


@pytest.mark.parametrize("flag", ["--weights", "--batch", "--grads", "--after"])
def test_diagnose_refuses_an_npz_whose_header_claims_a_huge_array(tmp_path, capsys, flag):
    """The header is read before anything is allocated: one line, no 8 TB allocation."""
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("W1.npy", header.getvalue())
    w = {"W1": np.ones((4, 3)), "W2": np.ones((3, 1))}
    np.savez(tmp_path / "w.npz", **w)
    np.savez(tmp_path / "b.npz", obs=np.ones((5, 4)), actions=np.ones(5), advantages=np.ones(5))
    files = {"--weights": "w.npz", "--batch": "b.npz", "--grads": "w.npz", "--after": "w.npz"}
    files[flag] = "huge.npz"
    argv = ["diagnose", *(x for f, name in files.items() for x in (f, str(tmp_path / name)))]
    line = one_line_error(capsys, argv)
    assert "header claims shape (1000000, 1000000)" in line


def argparse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.endswith("\n")
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["train", "cartpole", "--seed", "x"],
            "pgrl train: error: argument --seed: invalid int value: 'x' (see pgrl train --help)",
        ),
        ([], "pgrl: error: the following arguments are required: command (see pgrl --help)"),
        (
            ["compare", "cartpole", "--executor", "slurm"],
            "pgrl compare: error: argument --executor: invalid choice: 'slurm' (choose from "
            "'local', 'ray') (see pgrl compare --help)",
        ),
        (
            ["train", "cartpole", "--backend", "num\npy"],
            "pgrl train: error: argument --backend: invalid choice: 'num\\npy' (choose from "
            "'numpy', 'tensorflow') (see pgrl train --help)",
        ),
    ],
)
def test_argparse_errors_are_one_line(capsys, argv, line):
    """argparse prints its usage (several lines) before the error; pgrl prints the error."""
    assert argparse_error(capsys, argv) == line


def test_a_huge_argument_is_cut_in_the_error_line(capsys):
    line = argparse_error(capsys, ["train", "cartpole", "--seed", "9" * 5000])
    assert line.startswith("pgrl train: error: argument --seed: invalid int value: '999")
    assert "(5," in line and len(line) < 1100 and line.endswith("(see pgrl train --help)")


@pytest.mark.parametrize(
    "grid, line",
    [
        (
            "episodes=10,20",
            "--grid 'episodes=10,20': expected section.key=v1,v2,..., "
            "e.g. optimizer.learning_rate=3e-3,1e-2",
        ),
        ("=1,2", "--grid '=1,2': expected section.key=v1,v2,..., e.g. "),
        ("policy.hidden_sizes=[16]," + "[" * 5000, "--grid 'policy.hidden_sizes=[[[["),
    ],
)
def test_a_bad_grid_value_is_named_as_a_grid_value(capsys, tmp_path, grid, line):
    argv = ["sweep", "cartpole", "--grid", grid, "--out", str(tmp_path / "sw")]
    got = one_line_error(capsys, argv)
    assert got.startswith(f"pgrl sweep: error: {line}"), got
    assert "--set" not in got and not (tmp_path / "sw").exists()


def test_address_without_the_ray_runner_is_refused(capsys, tmp_path):
    argv = ["train", "cartpole", "--address", "10.0.0.1:6379", "--out", str(tmp_path / "run")]
    assert one_line_error(capsys, argv) == (
        'pgrl train: error: --address: needs env.runner = "ray" (--set env.runner=ray)'
    )
    assert not (tmp_path / "run").exists()


def test_names_with_control_characters_stay_on_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a\nb").write_text("a file")
    assert one_line_error(capsys, ["eval", "a\nb.npz"]) == (
        "pgrl eval: error: a\\nb.npz: no such file, and not a pretrained policy name (pong)"
    )
    assert one_line_error(capsys, ["train", "cartpole", "--out", "a\nb"]) == (
        "pgrl train: error: --out a\\nb: exists and is not a directory"
    )
    line = one_line_error(capsys, ["eval", "x\rpgrl eval: fine\x1b[2K.npz"])
    assert line.startswith("pgrl eval: error: x\\rpgrl eval: fine\\x1b[2K.npz: no such file")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny CartPole run: its directory."""
    out = tmp_path_factory.mktemp("trained") / "run"
    argv = ["train", "cartpole", "--set", "train.episodes=20", "--set", "log.progress=false"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "what, local, central, value, reason",
    [
        ("encrypted", 6, 8, 1, "is encrypted, password required for extraction"),
        ("compression", 8, 10, 99, "That compression method is not supported"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "export", "init", "resume"])
def test_an_archive_zipfile_cannot_open_is_one_line(
    capsys, tmp_path, trained, command, what, local, central, value, reason
):
    """zipfile raises RuntimeError for a member flagged as encrypted and NotImplementedError for
    an unknown compression method: both are a corrupt file."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    bad = run / "checkpoint.npz"
    bad.write_bytes(zip_field(bad.read_bytes(), local, central, value))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    tiny = ["--set", "train.episodes=20", "--set", "log.progress=false"]
    argv = {
        "eval": ["eval", str(bad)],
        "export": ["export", str(bad), str(tmp_path / "w.npz")],
        "init": ["train", "cartpole", *tiny, "--init", str(bad), "--out", str(tmp_path / "new")],
        "resume": ["train", "cartpole", *tiny, "--resume", "--out", str(run)],
    }[command]
    line = one_line_error(capsys, argv)
    assert line.startswith(f"pgrl {argv[0]}: error: {bad}: corrupt or truncated "), line
    assert reason in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("wall_time", np.float64(np.nan), "wall_time = nan"),
        ("wall_time", np.float64(-1.0), "wall_time = -1"),
        ("episodes", np.float64(1e300), "episodes = 1e+300"),
        ("updates", np.float64(2.5), "updates = 2.5"),
    ],
)
def test_resume_refuses_impossible_counters(capsys, tmp_path, trained, key, value, reason):
    """A NaN wall time would make every later time NaN; a counter beyond int64 or not whole
    would be reported as a digit string thousands long."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with np.load(run / "checkpoint.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[key] = value
    np.savez(run / "checkpoint.npz", **arrays)
    argv = ["train", "cartpole", "--set", "train.episodes=20", "--resume", "--out", str(run)]
    line = one_line_error(capsys, argv)
    checkpoint = run / "checkpoint.npz"
    assert line == f"pgrl train: error: {checkpoint}: corrupt counters ({reason})"


@pytest.mark.parametrize(
    "grid, message",
    [
        ("env.id=Pendulum-v1", "policy.head = 'bernoulli' does not fit Pendulum-v1: pgrl's"),
        ("env.id=Blackjack-v1", "env Blackjack-v1 with env.kwargs {}: pgrl needs flat Box"),
        (
            "env.kwargs={a=1}",
            "env CartPole-v1 with env.kwargs {'a': 1}: CartPoleEnv.__init__() got an unexpected "
            "keyword argument 'a'",
        ),
    ],
)
def test_sweep_refuses_an_env_it_cannot_make_before_any_trial(capsys, tmp_path, grid, message):
    out = tmp_path / "sw"
    argv = ["sweep", "cartpole", "--grid", grid, "--set", "train.episodes=5", "--out", str(out)]
    line = one_line_error(capsys, argv)
    assert line.startswith(f"pgrl sweep: error: {message}"), line
    assert not out.exists()


@pytest.fixture
def missing_module_env():
    import gymnasium as gym

    gym.register("PgrlMissingModule-v0", entry_point="pgrl_no_such_module:Env")
    yield "PgrlMissingModule-v0"
    del gym.envs.registry["PgrlMissingModule-v0"]


def test_an_env_whose_package_is_missing_is_named(capsys, tmp_path, missing_module_env):
    argv = ["train", "cartpole", "--set", f"env.id={missing_module_env}"]
    assert one_line_error(capsys, [*argv, "--out", str(tmp_path / "run")]) == (
        "pgrl train: error: env PgrlMissingModule-v0 with env.kwargs {}: "
        "No module named 'pgrl_no_such_module'"
    )


def test_huge_env_errors_are_cut(capsys, tmp_path):
    kwargs = "{" + ", ".join(f"k{i} = 1" for i in range(5000)) + "}"
    config = tmp_path / "cfg.toml"
    config.write_text(f'[env]\nid = "{"C" * 100_000}-v1"\n')
    for argv in (
        ["train", "cartpole", "--set", f"env.kwargs={kwargs}"],
        ["train", str(config)],
    ):
        line = one_line_error(capsys, [*argv, "--out", str(tmp_path / "run")])
        assert line.startswith("pgrl train: error: env C") and len(line) < 1000, line[:300]


def test_render_mode_that_is_no_string_is_one_line(capsys, tmp_path):
    argv = ["train", "cartpole", "--set", "env.kwargs={render_mode=1}"]
    assert one_line_error(capsys, [*argv, "--out", str(tmp_path / "run")]) == (
        "pgrl train: error: env CartPole-v1 with env.kwargs {'render_mode': 1}: render_mode "
        "must be a string such as 'rgb_array', got 1"
    )


def test_eval_of_a_file_whose_config_fits_no_policy_names_the_file(capsys, tmp_path, trained):
    with np.load(trained / "checkpoint.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["config"] = np.array('[env]\nid = "Acrobot-v1"\n[policy]\nhidden_sizes = [32]\n')
    bad = tmp_path / "other.npz"
    np.savez(bad, **arrays)
    line = one_line_error(capsys, ["eval", str(bad), "--episodes", "1"])
    assert line.startswith(
        f"pgrl eval: error: {bad}: policy.head = 'bernoulli' does not fit Acrobot-v1: pgrl's "
        "Bernoulli head needs Discrete(2) actions"
    ), line

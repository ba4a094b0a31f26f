"""pgrl compare and pgrl check: files, tables, divergence report, failure handling, exit codes."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

import pgrl.compare
from pgrl.cli import main as cli_main
from pgrl.compare import RUN_COLUMNS, compare

CARTPOLE = "configs/cartpole.toml"


def test_compare_writes_every_file(tmp_path, capsys):
    rows = compare(
        CARTPOLE,
        seeds=(0, 1),
        out=tmp_path,
        workers=2,
        overrides=["train.episodes=20"],
        progress=False,
    )
    for name in ("comparison.csv", "comparison.md", "curves.png"):
        assert (tmp_path / name).is_file(), name
    for b in ("numpy", "tensorflow"):
        for s in (0, 1):
            assert (tmp_path / f"{b}-seed{s}" / "metrics.csv").is_file()
    with open(tmp_path / "comparison.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 == len(rows)
    assert list(table[0]) == RUN_COLUMNS
    assert {(r["backend"], r["seed"]) for r in table} == {
        (b, str(s)) for b in ("numpy", "tensorflow") for s in (0, 1)
    }
    assert all(r["status"] == "ok" and r["episodes"] == "20" for r in table)
    assert all(r["first_diff_episode"] == "identical throughout" for r in table)
    with Image.open(tmp_path / "curves.png") as im:
        assert im.size[0] >= 800 and im.size[1] >= 300
    printed = capsys.readouterr().out
    assert "| numpy |" in printed and "identical throughout" in printed


def test_float64_cartpole_runs_are_identical_for_200_episodes(tmp_path):
    """The pgrl promise, through the comparison report."""
    rows = compare(
        CARTPOLE,
        seeds=(0,),
        out=tmp_path,
        workers=2,
        overrides=["train.episodes=200", "train.solved_mean100=1000"],
        progress=False,
    )
    assert [r["first_diff_episode"] for r in rows] == ["identical throughout"] * 2
    assert float(rows[0]["max_weight_diff"]) < 1e-9


def _failing_run(config_path, overrides, backend, seed, out, single_thread):
    if seed == 1:
        raise RuntimeError("simulated crash in a worker")
    return _REAL_RUN_ONE(config_path, overrides, backend, seed, out, single_thread)


_REAL_RUN_ONE = pgrl.compare._run_one


def test_a_failed_run_is_reported_and_the_others_kept(tmp_path, monkeypatch):
    # the worker process unpickles _failing_run from this test module, which it imports
    monkeypatch.setattr(pgrl.compare, "_run_one", _failing_run)
    rows = compare(
        CARTPOLE,
        backends=("numpy",),
        seeds=(0, 1),
        out=tmp_path,
        workers=1,
        overrides=["train.episodes=10"],
        progress=False,
    )
    by_seed = {r["seed"]: r for r in rows}
    assert by_seed[0]["status"] == "ok" and by_seed[0]["episodes"] == 10
    assert by_seed[1]["status"] == "error"
    assert "simulated crash" in by_seed[1]["error"]
    md = (tmp_path / "comparison.md").read_text()
    assert "Failed runs" in md and "simulated crash" in md
    assert (tmp_path / "numpy-seed0" / "checkpoint.npz").is_file()


@pytest.mark.parametrize("config", ["configs/cartpole.toml", "configs/pong.toml"])
def test_check_passes_on_shipped_configs(config, capsys):
    assert cli_main(["check", config]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "finite diff. W1" in out


def test_check_explain(capsys):
    assert cli_main(["check", CARTPOLE, "--explain"]) == 0
    out = capsys.readouterr().out
    assert "logit instead of sigmoid(logit) - y" in out and "reduction 'mean'" in out


def test_check_fails_and_names_the_layer_when_a_backend_is_perturbed(monkeypatch, capsys):
    from pgrl.policies.tf_policy import TensorFlowPolicy

    real = TensorFlowPolicy._gradients

    def perturbed(self, obs, actions, advantages):
        grads = real(self, obs, actions, advantages)
        grads["W2"] = grads["W2"] * (1 + 1e-6)
        return grads

    monkeypatch.setattr(TensorFlowPolicy, "_gradients", perturbed)
    assert cli_main(["check", CARTPOLE]) == 1
    out = capsys.readouterr().out
    assert "FAIL: gradient W2" in out
    assert "gradient W1" in out.split("FAIL:")[0]  # W1 still reported as ok


def test_compare_bad_config_exits_2(tmp_path, capsys):
    assert cli_main(["compare", CARTPOLE, "--out", str(tmp_path), "--set", "train.gamma=3"]) == 2
    assert "train.gamma" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_plot_curves_handles_runs_of_different_length(tmp_path):
    for b, n in (("numpy", 5), ("tensorflow", 9)):
        d = tmp_path / f"{b}-seed0"
        d.mkdir()
        with open(d / "metrics.csv", "w") as f:
            f.write("episode,steps,wall_time,return,running_return,mean100,length,update\n")
            for k in range(1, n + 1):
                f.write(f"{k},{k * 10},{k * 0.1},{k},{k},{k},10,{k}\n")
    path = pgrl.compare.plot_curves(
        tmp_path, [("numpy", 0), ("tensorflow", 0)], ("numpy", "tensorflow"), 475.0, "test"
    )
    assert path.is_file()
    assert np.asarray(Image.open(path)).std() > 0


def test_scripts_compare_uses_the_same_code(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "scripts/compare.py",
            CARTPOLE,
            "--backends",
            "numpy",
            "--seeds",
            "0",
            "--out",
            str(tmp_path),
            "--set",
            "train.episodes=5",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "comparison.csv").is_file() and "| numpy |" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--seeds", "0", "0"], "--seeds lists a value twice"),
        (["--backends", "numpy", "numpy"], "--backends lists a value twice"),
        (["--seeds", "-1"], "--seeds must be >= 0"),
    ],
)
def test_compare_argument_mistakes_exit_2(tmp_path, capsys, args, message):
    assert cli_main(["compare", CARTPOLE, "--out", str(tmp_path / "c"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()

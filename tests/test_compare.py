"""pgrl compare and pgrl check: files, tables, divergence report, failure handling, exit codes."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pgrl.compare
import pgrl.executor
import pgrl.sweep
from pgrl.check import synthetic_batch
from pgrl.checkpoint import save_checkpoint
from pgrl.cli import main as cli_main
from pgrl.compare import RUN_COLUMNS, compare
from pgrl.config import load_config
from pgrl.executor import Trial
from pgrl.policies import make_policy
from pgrl.rundir import METRICS_HEADER, RunState

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


def _failing_run(cfg, trial, run_dir, report=None):
    if trial.seed == 1:
        raise RuntimeError("simulated crash in a worker")
    return _REAL_RUN_ONE(cfg, trial, run_dir)


_REAL_RUN_ONE = pgrl.executor.run_trial


def test_a_failed_run_is_reported_and_the_others_kept(tmp_path, monkeypatch):
    # the worker process unpickles _failing_run from this test module, which it imports
    monkeypatch.setattr(pgrl.executor, "run_trial", _failing_run)
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


# Hand-made pairs of runs per seed: (numpy returns, tensorflow returns or None for a failed run),
# and the tensorflow run's final weights = numpy's + offsets.
BASE_RETURNS = [float(r) for r in np.random.default_rng(7).integers(9, 200, size=30)]
DIVERGING = [r + (1.0 if k in (17, 25) else 0.0) for k, r in enumerate(BASE_RETURNS, 1)]
WEIGHT_OFFSETS = {("W2", (3, 0)): 0.0123, ("b1", (2,)): -0.004}  # the largest: 0.0123
SCENARIOS = {  # seed: (numpy returns, tensorflow returns, tensorflow weights offset?)
    0: (BASE_RETURNS, DIVERGING, True),  # first differs at episode 17
    1: (BASE_RETURNS, BASE_RETURNS, False),  # identical throughout
    2: (BASE_RETURNS, BASE_RETURNS[:25], False),  # tensorflow stopped early: 26
    3: (BASE_RETURNS[:20], BASE_RETURNS, False),  # numpy stopped early: 21
    4: (BASE_RETURNS, None, False),  # tensorflow failed
}
EXPECTED_DIVERGENCE = {
    0: (17, "0.0123"),
    1: ("identical throughout", "0"),
    2: (26, "0"),
    3: (21, "0"),
    4: ("", ""),  # nothing to compare with
}


def _final_weights(backend, seed):
    weights = make_policy("numpy", obs_dim=4, hidden_sizes=(8,), bias=True).get_weights()
    if backend == "tensorflow" and SCENARIOS[seed][2]:
        for (name, index), offset in WEIGHT_OFFSETS.items():
            weights[name][index] += offset
    return weights


def _write_run(run_dir, returns, weights):
    """A run directory as pgrl train leaves it: metrics.csv and checkpoint.npz."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(METRICS_HEADER)
        steps = 0
        for k, ret in enumerate(returns, 1):
            steps += int(ret)
            writer.writerow([k, steps, f"{0.01 * k:.3f}", ret, ret, ret, int(ret), (k + 9) // 10])
    policy = make_policy("numpy", obs_dim=4, hidden_sizes=(8,), bias=True)
    policy.set_weights(weights)
    state = RunState(episodes=len(returns), steps=steps, env_steps=steps, wall_time=1.0)
    save_checkpoint(run_dir / "checkpoint.npz", policy, state.to_dict(), {}, "")


def _scripted_run(cfg, trial, out, report=None):
    """Stands for run_trial: writes the scenario's run, or fails as it says."""
    backend, seed = trial.backend, trial.seed
    numpy_returns, tf_returns, _ = SCENARIOS[seed]
    returns = numpy_returns if backend == "numpy" else tf_returns
    if returns is None:
        return {"status": "error", "error": "RuntimeError: simulated crash"}
    _write_run(Path(out), returns, _final_weights(backend, seed))
    return {
        "status": "ok",
        "episodes": len(returns),
        "solved": False,
        "solved_episode": None,
        "wall_time": 1.0,
        "final_running_return": returns[-1],
        "mean100": float(np.mean(returns)),
        "steps_per_second": 100.0,
    }


def test_divergence_first_differing_episode_and_weight_gap(tmp_path):
    backends = ("numpy", "tensorflow")
    rows = []
    for seed in SCENARIOS:
        for b in backends:
            result = _scripted_run(None, Trial("", b, seed), str(tmp_path / f"{b}-seed{seed}"))
            rows.append({**dict.fromkeys(RUN_COLUMNS, ""), "backend": b, "seed": seed, **result})
    gap = max(
        float(np.max(np.abs(_final_weights("tensorflow", 0)[k] - w)))
        for k, w in _final_weights("numpy", 0).items()
    )
    assert gap == pytest.approx(0.0123, rel=1e-12)  # the scenario is what it says
    pgrl.compare.add_divergence(tmp_path, rows, backends, tuple(SCENARIOS))
    for r in rows:
        expected = EXPECTED_DIVERGENCE[r["seed"]]
        assert (r["first_diff_episode"], r["max_weight_diff"]) == expected, r


def test_compare_reports_the_divergence(tmp_path, monkeypatch):
    # the worker process unpickles _scripted_run from this test module, which it imports
    monkeypatch.setattr(pgrl.executor, "run_trial", _scripted_run)
    seeds = tuple(SCENARIOS)
    compare(CARTPOLE, seeds=seeds, out=tmp_path, workers=1, progress=False)
    with open(tmp_path / "comparison.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["backend"], int(r["seed"])) for r in table] == [
        (b, s) for s in seeds for b in ("numpy", "tensorflow")
    ]
    for r in table:
        expected = tuple(map(str, EXPECTED_DIVERGENCE[int(r["seed"])]))
        assert (r["first_diff_episode"], r["max_weight_diff"]) == expected, r
    assert [r["status"] for r in table if r["seed"] == "4"] == ["ok", "error"]
    md = (tmp_path / "comparison.md").read_text()
    assert "| numpy | 0 | ok | 30 |" in md and "| 17 | 0.0123 |" in md


@pytest.mark.parametrize(
    "config",
    [
        "configs/cartpole.toml",
        "configs/pong.toml",
        "configs/acrobot.toml",
        "configs/lunarlander_ppo.toml",
    ],
)
def test_check_passes_on_shipped_configs(config, capsys):
    assert cli_main(["check", config]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "finite diff. W1" in out


def _reference_network(cfg, obs_dim):
    """The config's initial weights, as DESIGN.md promises: randn(fan_in, fan_out) / sqrt(fan_in)
    drawn in order W1, W2, ... from default_rng(train.seed); biases zero."""
    sizes = [obs_dim, *cfg.policy.hidden_sizes, 1]
    rng = np.random.default_rng(cfg.train.seed)
    weights = {}
    for i in range(1, len(sizes)):
        weights[f"W{i}"] = rng.standard_normal((sizes[i - 1], sizes[i])) / np.sqrt(sizes[i - 1])
        if cfg.policy.bias:
            weights[f"b{i}"] = np.zeros(sizes[i])
    return weights


def _reference_gradients(weights, obs, dlogits):
    """Backprop of a ReLU MLP given dL/dz (N,): the per-parameter gradients, W1 .. bn."""
    n_layers = sum(name.startswith("W") for name in weights)
    bias = "b1" in weights
    hs, pre = [obs], []
    for i in range(1, n_layers):
        a = hs[-1] @ weights[f"W{i}"] + (weights[f"b{i}"] if bias else 0)
        pre.append(a)
        hs.append(np.maximum(a, 0))
    grads = {}
    dh = dlogits[:, None]
    for i in range(n_layers, 0, -1):
        grads[f"W{i}"] = hs[i - 1].T @ dh
        if bias:
            grads[f"b{i}"] = dh.sum(axis=0)
        if i > 1:
            dh = (dh @ weights[f"W{i}"].T) * (pre[i - 2] > 0)
    return grads


def _reference_logits(weights, obs):
    n_layers = sum(name.startswith("W") for name in weights)
    h = obs
    for i in range(1, n_layers + 1):
        a = h @ weights[f"W{i}"] + (weights[f"b{i}"] if f"b{i}" in weights else 0)
        h = np.maximum(a, 0) if i < n_layers else a
    return h[:, 0]


def _reference_first_step(grads, lr, decay, eps, inside):
    """RMSprop's first step from v = 0, all parameters in one flat vector."""
    g = np.concatenate([v.ravel() for v in grads.values()])
    v = (1 - decay) * g**2
    return -lr * g / (np.sqrt(v + eps) if inside else np.sqrt(v) + eps)


def _printed(out, label):
    """The %.3g figure printed after ``label`` in ``pgrl check --explain``."""
    match = re.search(rf"^  {re.escape(label)}\s+(\S+)$", out, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{out}"
    return float(match.group(1))


def _agree_to_3_digits(printed, value):
    half_unit = 0.5 * 10 ** (np.floor(np.log10(abs(value))) - 2)
    return abs(printed - value) <= half_unit * (1 + 1e-9)


@pytest.mark.parametrize(
    "overrides, seed",
    [([], 0), (["optimizer.epsilon_inside_sqrt=true", "policy.reduction=mean"], 3)],
)
def test_check_explain(capsys, overrides, seed):
    """The four figures of --explain, against an independent NumPy forward/backward and
    RMSprop first step for the same config, weights and batch."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    assert cli_main(["check", CARTPOLE, "--explain", "--seed", str(seed), *sets]) == 0
    out = capsys.readouterr().out

    cfg = load_config(CARTPOLE, overrides)
    o, reduction = cfg.optimizer, cfg.policy.reduction
    obs, actions, advantages = synthetic_batch(cfg, 4, seed=seed)
    weights = _reference_network(cfg, 4)
    z = _reference_logits(weights, obs)
    n = len(actions)
    per_step = 1 / n if reduction == "mean" else 1.0
    right = advantages * (1 / (1 + np.exp(-z)) - actions)  # dBCE/dz = sigmoid(z) - y

    def step(dlogits, scale=1.0, inside=o.epsilon_inside_sqrt):
        grads = {k: scale * g for k, g in _reference_gradients(weights, obs, dlogits).items()}
        return _reference_first_step(grads, o.learning_rate, o.decay, o.epsilon, inside)

    def change(variant, reference):
        return np.linalg.norm(variant - reference) / np.linalg.norm(reference)

    reference = step(right * per_step)
    other = "sum" if reduction == "mean" else "mean"
    expected = {
        "1 logit instead of sigmoid(logit) - y": change(
            step(advantages * (z - actions) * per_step), reference
        ),
        f"2 epsilon {'outside' if o.epsilon_inside_sqrt else 'inside'} the sqrt": change(
            step(right * per_step, inside=not o.epsilon_inside_sqrt), reference
        ),
        "2 ... with gradients 1e-6 as large": change(
            step(right * per_step, 1e-6, inside=not o.epsilon_inside_sqrt),
            step(right * per_step, 1e-6),
        ),
        f"3 reduction '{other}'": change(
            step(right * (1 / n if other == "mean" else 1.0)), reference
        ),
    }
    for label, value in expected.items():
        printed = _printed(out, label)
        assert _agree_to_3_digits(printed, value), (label, printed, value)


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
    rows = [
        {"trial": f"{b}-seed0", "point": "p0", "backend": b, "status": "ok"}
        for b in ("numpy", "tensorflow")
    ]
    groups = pgrl.sweep.curve_groups(tmp_path, rows, [Trial("numpy-seed0", "numpy", 0)])
    assert [len(runs[0]["episode"]) for *_, runs in groups] == [5, 9]
    path = tmp_path / "curves.png"
    pgrl.sweep.plot_curves(path, groups, 475.0, "test", per_second=True)
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


def test_a_full_disk_at_the_reports_is_one_line_and_keeps_the_runs(tmp_path, monkeypatch, capsys):
    import builtins
    import errno
    import io

    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):
        if "comparison" in os.path.basename(str(file)) and mode[0] in "wax":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    monkeypatch.setattr(io, "open", full_disk)
    argv = ["compare", CARTPOLE, "--backends", "numpy", "--seeds", "0", "--workers", "1"]
    assert cli_main([*argv, "--set", "train.episodes=20", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err == (
        f"pgrl compare: error: --out {tmp_path}: no space left on the device; the reports were "
        "not all written, the runs are complete in its <backend>-seed<k> directories"
    )
    assert len(read_metrics_rows(tmp_path / "numpy-seed0" / "metrics.csv")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numpy-seed0"]  # no partial report


def read_metrics_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

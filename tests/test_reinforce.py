"""Training runs (pgrl.reinforce, pgrl.rundir): reproducible, resumable, backend-swappable,
and it learns."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pgrl
import pgrl.reinforce
from pgrl.build import build_policy
from pgrl.checkpoint import load_checkpoint
from pgrl.cli import main as cli_main
from pgrl.config import (
    Config,
    ConfigError,
    OptimizerConfig,
    PolicyConfig,
    TrainConfig,
    load_config,
)
from pgrl.reinforce import train
from pgrl.returns import compute_advantages

CARTPOLE = "configs/cartpole.toml"
QUIET = ["log.progress=false"]


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_wall_time(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def small(*overrides, episodes=30):
    return load_config(CARTPOLE, [*QUIET, f"train.episodes={episodes}", *overrides])


def test_compute_advantages_per_episode_and_per_batch():
    rewards = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    bounds = np.array([0, 3, 6])
    per_ep = compute_advantages(rewards, bounds, 0.5, False, "episode")
    for lo, hi in ((0, 3), (3, 6)):
        assert abs(per_ep[lo:hi].mean()) < 1e-12 and abs(per_ep[lo:hi].std() - 1) < 1e-12
    batch = compute_advantages(rewards, bounds, 0.5, False, "batch")
    assert abs(batch.mean()) < 1e-12 and abs(batch.std() - 1) < 1e-12
    raw = compute_advantages(rewards, bounds, 0.5, False, "none")
    np.testing.assert_allclose(raw, [1.75, 1.5, 1.0, 0.25, 0.5, 1.0])


def test_run_directory_files(tmp_path):
    summary = train(small(), out=tmp_path)
    for name in ("config.toml", "metrics.csv", "updates.csv", "checkpoint.npz", "summary.json"):
        assert (tmp_path / name).is_file(), name
    rows = read_metrics(tmp_path / "metrics.csv")
    header = list(rows[0])
    assert header[:6] == ["episode", "steps", "wall_time", "return", "running_return", "mean100"]
    assert len(rows) == 30 and [int(r["episode"]) for r in rows] == list(range(1, 31))
    returns = [float(r["return"]) for r in rows]
    running = returns[0]
    for r, ret in zip(rows[1:], returns[1:], strict=True):
        running = 0.99 * running + 0.01 * ret  # Karpathy's running reward
        assert float(r["running_return"]) == pytest.approx(running, rel=1e-12)
    assert float(rows[-1]["mean100"]) == pytest.approx(np.mean(returns))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in (
        "backend",
        "seed",
        "episodes",
        "steps",
        "wall_time",
        "steps_per_second",
        "solved",
        "solved_episode",
        "final_running_return",
    ):
        assert key in summary
    assert summary["episodes"] == 30 and summary["steps"] == int(rows[-1]["steps"])
    assert load_config(tmp_path / "config.toml") == small()
    updates = read_metrics(tmp_path / "updates.csv")
    assert len(updates) == 2  # 30 episodes in batches of 20: 20 + 10
    assert {"loss", "grad_norm", "mean_prob", "entropy"} <= set(updates[0])


def test_same_seed_same_metrics(tmp_path):
    train(small(), out=tmp_path / "a")
    train(small(), out=tmp_path / "b")
    a = read_metrics(tmp_path / "a" / "metrics.csv")
    b = read_metrics(tmp_path / "b" / "metrics.csv")
    assert without_wall_time(a) == without_wall_time(b)
    train(small("train.seed=1"), out=tmp_path / "c")
    c = read_metrics(tmp_path / "c" / "metrics.csv")
    assert without_wall_time(a) != without_wall_time(c)


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_resume_equals_no_interruption(tmp_path, backend):
    k = 4  # updates of 5 episodes
    full = train(small(f"policy.backend={backend}", episodes=10 * k), out=tmp_path / "full")
    train(small(f"policy.backend={backend}", episodes=5 * k), out=tmp_path / "split")
    resumed = train(
        small(f"policy.backend={backend}", episodes=10 * k), out=tmp_path / "split", resume=True
    )
    assert resumed["episodes"] == full["episodes"] and resumed["steps"] == full["steps"]
    a = load_checkpoint(tmp_path / "full" / "checkpoint.npz")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    for name, w in a["weights"].items():
        np.testing.assert_array_equal(b["weights"][name], w)
    for name, v in a["optimizer_state"].items():
        np.testing.assert_array_equal(b["optimizer_state"][name], v)
    assert a["rng_state"] == b["rng_state"]
    rows_a = read_metrics(tmp_path / "full" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "split" / "metrics.csv")
    assert without_wall_time(rows_a) == without_wall_time(rows_b)


@pytest.mark.parametrize("source, target", [("numpy", "tensorflow"), ("tensorflow", "numpy")])
def test_checkpoint_resumes_under_the_other_backend(tmp_path, source, target):
    train(small(f"policy.backend={source}", episodes=20), out=tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")
    assert ckpt["backend"] == source
    cfg = small(episodes=20)
    obs = np.random.default_rng(0).standard_normal((64, 4))
    probs = {}
    for backend in (source, target):
        policy = build_policy(cfg, 4, backend)
        policy.set_weights(ckpt["weights"])
        policy.set_optimizer_state(ckpt["optimizer_state"])
        probs[backend] = policy.action_prob(obs)
    np.testing.assert_allclose(probs[target], probs[source], rtol=1e-12)
    summary = train(small(episodes=30), out=tmp_path, resume=True, backend=target)
    assert summary["backend"] == target and summary["episodes"] == 30


def test_float64_backends_play_identical_episodes(tmp_path):
    """The pgrl promise: actions are sampled outside the backend, so equal p, equal episodes."""
    cfg = load_config(CARTPOLE, [*QUIET, "train.episodes=300", "train.solved_mean100=1000"])
    train(cfg, out=tmp_path / "numpy", backend="numpy")
    train(cfg, out=tmp_path / "tensorflow", backend="tensorflow")
    a = read_metrics(tmp_path / "numpy" / "metrics.csv")
    b = read_metrics(tmp_path / "tensorflow" / "metrics.csv")
    assert len(a) == len(b) == 300
    assert [r["return"] for r in a] == [r["return"] for r in b]
    assert float(a[-1]["mean100"]) > 100  # and they learned something on the way
    # The weights still track each other, but not to 1e-10: training at this learning rate is
    # chaotic, and the backends' 1e-16 rounding differences grow ~3x per update (README).
    wa = load_checkpoint(tmp_path / "numpy" / "checkpoint.npz")["weights"]
    wb = load_checkpoint(tmp_path / "tensorflow" / "checkpoint.npz")["weights"]
    for name in wa:
        assert np.max(np.abs(wb[name] - wa[name])) < 1e-4


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_cartpole_config_solves_cartpole(tmp_path, backend):
    cfg = load_config(CARTPOLE, QUIET)
    summary = train(cfg, out=tmp_path, backend=backend)
    assert summary["solved"], summary
    assert summary["mean100"] >= 475
    assert summary["episodes"] <= 2000


# ----- the command line -----


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pgrl.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "policy.hiden_sizes=[3]"], ["unknown key 'policy.hiden_sizes'", "did you mean"]),
        (["--set", "train.gamma=2"], ["'train.gamma' must be in (0, 1]"]),
        (["--set", "optimizer.learning_rate=-1"], ["'optimizer.learning_rate' must be > 0"]),
        (["--set", "env.num_envs=0"], ["'env.num_envs' must be >= 1"]),
        (["--set", "policy.hidden_sizes=[0]"], ["'policy.hidden_sizes'"]),
        (["--set", "env.id=Tetris"], ["'env.id' must be one of"]),
        (["--set", "train.episodes=ten"], ["'train.episodes' must be int"]),
    ],
)
def test_cli_config_mistakes_exit_2_with_one_line(tmp_path, args, fragments):
    result = run_cli("train", CARTPOLE, "--out", str(tmp_path / "run"), *args)
    assert_one_line_error(result, CARTPOLE, *fragments)
    assert not (tmp_path / "run").exists()


def test_cli_missing_and_malformed_config(tmp_path):
    assert_one_line_error(run_cli("train", str(tmp_path / "none.toml")), "no such config file")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nseed = 1\n")
    assert_one_line_error(run_cli("train", str(bad)), "TOML syntax error", "line 1")


def test_cli_refuses_bad_checkpoints_and_leaves_the_run_alone(tmp_path):
    run = tmp_path / "run"
    assert (
        cli_main(
            [
                "train",
                CARTPOLE,
                "--out",
                str(run),
                "--set",
                "train.episodes=10",
                "--set",
                "log.progress=false",
            ]
        )
        == 0
    )
    ckpt = run / "checkpoint.npz"
    good = ckpt.read_bytes()

    def snapshot():  # .lock names the last process that held the run: not the run's data
        return {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}

    # a network of another shape
    before = snapshot()
    result = run_cli(
        "train",
        CARTPOLE,
        "--out",
        str(run),
        "--resume",
        "--set",
        "policy.hidden_sizes=[16]",
        "--set",
        "train.episodes=20",
    )
    assert_one_line_error(
        result, "differs from the run's in policy.hidden_sizes", "--allow-changes"
    )
    assert snapshot() == before
    result = run_cli(
        "train",
        CARTPOLE,
        "--out",
        str(run),
        "--resume",
        "--allow-changes",
        "--set",
        "policy.hidden_sizes=[16]",
    )
    assert_one_line_error(result, "does not fit this network", "W1")
    assert snapshot() == before
    # truncated and corrupt files
    for damaged, reason in (
        (good[: len(good) // 2], "corrupt or truncated"),
        (b"not a zip file at all", "not an .npz archive"),
    ):
        ckpt.write_bytes(damaged)
        before = snapshot()
        result = run_cli(
            "train", CARTPOLE, "--out", str(run), "--resume", "--set", "train.episodes=20"
        )
        assert_one_line_error(result, "checkpoint.npz", reason)
        assert snapshot() == before
    # nothing to resume
    result = run_cli("train", CARTPOLE, "--out", str(tmp_path / "empty"), "--resume")
    assert_one_line_error(result, "nothing to resume")
    # eval of a corrupt checkpoint
    assert_one_line_error(run_cli("eval", str(ckpt)), "not an .npz archive")


def test_checkpoint_has_no_pickle(tmp_path):
    train(small(episodes=10), out=tmp_path)
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def test_sigint_stops_cleanly_and_resumes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgrl.cli",
            "train",
            CARTPOLE,
            "--out",
            str(run),
            "--set",
            "train.solved_mean100=100000",
            "--set",
            "train.episodes=100000",
            "--set",
            "log.progress=false",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (run / "updates.csv").exists() or len(read_metrics(run / "updates.csv")) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    ckpt = load_checkpoint(run / "checkpoint.npz")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "interrupted"
    assert ckpt["state"]["episodes"] == summary["episodes"] > 0
    rows = read_metrics(run / "metrics.csv")
    assert len(rows) >= ckpt["state"]["episodes"]
    resumed = train(small(episodes=ckpt["state"]["episodes"] + 10), out=run, resume=True)
    assert resumed["episodes"] == ckpt["state"]["episodes"] + 10
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["episode"]) for r in rows] == list(range(1, resumed["episodes"] + 1))


def test_eval_plays_a_checkpoint(tmp_path):
    train(small(episodes=10), out=tmp_path)
    gif = tmp_path / "episode.gif"
    result = run_cli("eval", str(tmp_path / "checkpoint.npz"), "--episodes", "3", "--gif", str(gif))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["returns"]) == 3 and out["mean"] == pytest.approx(np.mean(out["returns"]))
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames > 1 and im.size[0] > 100


def test_scripts_train_uses_the_same_code(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "scripts/train.py",
            CARTPOLE,
            "--out",
            str(tmp_path),
            "--set",
            "train.episodes=5",
            "--set",
            "log.progress=false",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["episodes"] == 5
    assert Path(tmp_path / "checkpoint.npz").is_file()


def test_budgets_stop_the_run(tmp_path):
    """Each budget stops the run and is named in summary["stopped_by"]; no timing is asserted."""
    by_episodes = train(small(episodes=30), out=tmp_path / "episodes")
    assert by_episodes["stopped_by"] == "episodes" and by_episodes["episodes"] == 30
    assert by_episodes["updates"] == 2  # 20 + 10: the last batch is cut to the budget
    by_steps = train(small("train.max_steps=2000", episodes=1000), out=tmp_path / "steps")
    assert by_steps["stopped_by"] == "max_steps"
    # stopped by the first update that reached 2000 env steps (an update is <= 20 x 500 steps)
    assert 2000 <= by_steps["env_steps"] < 2000 + 20 * 500
    # any policy's mean return on CartPole is > 8 (an episode lasts at least 8 steps), so
    # mean100 >= 8 as soon as 100 episodes were played: episode 100 solves it
    solved = train(small("train.solved_mean100=8", episodes=1000), out=tmp_path / "solved")
    assert solved["stopped_by"] == "solved" and solved["solved"]
    assert solved["solved_episode"] == 100 and solved["episodes"] == 100
    # a budget no update fits in: the run stops after its first update, whatever the machine
    by_time = train(small("train.max_seconds=1e-9", episodes=1000), out=tmp_path / "time")
    assert by_time["stopped_by"] == "max_seconds"
    assert by_time["updates"] == 1 and by_time["episodes"] == 20 < 1000
    for name, summary in (("episodes", by_episodes), ("steps", by_steps), ("time", by_time)):
        assert json.loads((tmp_path / name / "summary.json").read_text()) == summary


TENSORBOARD_RUN = """
import json, sys
from pgrl.config import load_config
from pgrl.reinforce import train

overrides = ["log.progress=false", "log.tensorboard=true", "policy.backend=numpy",
             "train.episodes=50", "train.batch_episodes=10"]
summary = train(load_config(sys.argv[1], overrides), out=sys.argv[2])
print(json.dumps({"summary": summary, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_tensorboard_scalars(tmp_path):
    """One point per update at steps 1..U, equal to updates.csv and metrics.csv, written by a
    NumPy run that never imports TensorFlow."""
    result = subprocess.run(
        [sys.executable, "-c", TENSORBOARD_RUN, CARTPOLE, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tensorflow"] is False  # the event file needs only the tensorboard package
    summary = out["summary"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    stats = ["loss", "grad_norm", "mean_prob", "entropy"]
    curves = ["running_return", "mean100"]
    assert set(scalars) == {*stats, *curves, "steps_per_second"}
    updates = read_metrics(tmp_path / "updates.csv")
    n = len(updates)
    assert n == summary["updates"] == 5
    for tag, points in scalars.items():
        assert [p.step for p in points] == list(range(1, n + 1)), tag

    def float32(text):  # TensorBoard stores simple_value as float32
        return float(np.float32(float(text)))

    for tag in stats:
        assert [p.value for p in scalars[tag]] == [float32(u[tag]) for u in updates], tag
    last_episode = {int(r["update"]): r for r in read_metrics(tmp_path / "metrics.csv")}
    assert sorted(last_episode) == list(range(1, n + 1))
    for tag in curves:
        expected = [float32(last_episode[k][tag]) for k in range(1, n + 1)]
        assert [p.value for p in scalars[tag]] == expected, tag
    sps = [p.value for p in scalars["steps_per_second"]]
    assert all(np.isfinite(sps)) and min(sps) > 0
    assert sps[-1] == pytest.approx(summary["steps_per_second"], rel=1e-6, abs=0.051)


def test_python_api(tmp_path):
    import pgrl

    cfg = pgrl.load_config(CARTPOLE, ["train.episodes=10", *QUIET])
    summary = pgrl.train(cfg, out=tmp_path)
    assert summary["episodes"] == 10 and summary["backend"] == "numpy"


def test_cli_protects_an_existing_run_and_other_mistakes(tmp_path):
    run = tmp_path / "run"
    base = ["--set", "train.episodes=20", "--set", "log.progress=false"]
    assert cli_main(["train", CARTPOLE, "--out", str(run), *base]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    # a forgotten --resume must not wipe the run
    assert_one_line_error(
        run_cli("train", CARTPOLE, "--out", str(run), *base), "already holds a run", "--resume"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert cli_main(["train", CARTPOLE, "--out", str(run), "--force", *base]) == 0
    # bad env kwargs, an --out that is a file, eval with no episodes
    assert_one_line_error(
        run_cli(
            "train", CARTPOLE, "--out", str(tmp_path / "k"), "--set", "env.kwargs={foo = 1}", *base
        ),
        "env.kwargs",
        "foo",
    )
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_one_line_error(run_cli("train", CARTPOLE, "--out", str(afile), *base), "not a directory")
    assert_one_line_error(
        run_cli("eval", str(run / "checkpoint.npz"), "--episodes", "0"), "--episodes must be >= 1"
    )
    assert_one_line_error(
        run_cli("train", CARTPOLE, "--set", "train.solved_mean100=nan"),
        "'train.solved_mean100' must be a finite number",
    )


def test_resume_drops_a_torn_metrics_row(tmp_path):
    train(small(episodes=40), out=tmp_path)
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("41,99")  # a crash in the middle of writing a row
    train(small(episodes=60), out=tmp_path, resume=True)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["episode"]) for r in rows] == list(range(1, 61))
    assert all(r["return"] for r in rows)


def test_ctrl_c_during_an_update_finishes_it_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGINT inside the 3rd update is held until the update and its bookkeeping are done."""
    cfg = small("env.num_envs=5", "train.batch_episodes=5", episodes=30)  # 6 updates of 5
    train(cfg, out=tmp_path / "full")
    real_build_policy = pgrl.reinforce.build_policy
    calls = []

    def build_interrupted_policy(*args, **kwargs):
        policy = real_build_policy(*args, **kwargs)
        real_step = policy.apply_gradients

        def step(grads):
            calls.append(grads)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the 3rd update runs
            return real_step(grads)

        policy.apply_gradients = step
        return policy

    monkeypatch.setattr(pgrl.reinforce, "build_policy", build_interrupted_policy)
    handler = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=run)
    assert len(calls) == 3
    assert signal.getsignal(signal.SIGINT) is handler  # the holder is uninstalled
    ckpt = load_checkpoint(run / "checkpoint.npz")
    assert ckpt["state"]["updates"] == 3 and ckpt["state"]["episodes"] == 15
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "interrupted" and summary["updates"] == 3
    full_metrics = without_wall_time(read_metrics(tmp_path / "full" / "metrics.csv"))
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["update"]) for r in rows] == [1] * 5 + [2] * 5 + [3] * 5
    assert without_wall_time(rows) == full_metrics[:15]
    assert len(read_metrics(run / "updates.csv")) == 3

    monkeypatch.undo()
    resumed = train(cfg, out=run, resume=True)
    assert resumed["stopped_by"] == "episodes" and resumed["updates"] == 6
    assert without_wall_time(read_metrics(run / "metrics.csv")) == full_metrics
    timing = ("rollout_seconds", "update_seconds", "gradient_seconds")

    def without_timing(rows):
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    assert without_timing(read_metrics(run / "updates.csv")) == without_timing(
        read_metrics(tmp_path / "full" / "updates.csv")
    )
    a = load_checkpoint(tmp_path / "full" / "checkpoint.npz")
    b = load_checkpoint(run / "checkpoint.npz")
    for name, w in a["weights"].items():
        np.testing.assert_array_equal(b["weights"][name], w)
    for name, v in a["optimizer_state"].items():
        np.testing.assert_array_equal(b["optimizer_state"][name], v)
    assert a["rng_state"] == b["rng_state"]


@pytest.mark.parametrize(
    "cfg, message",
    [
        (Config(train=TrainConfig(episodes=-5)), "'train.episodes' must be >= 1, got -5"),
        (
            Config(policy=PolicyConfig(hidden_sizes=["a"])),
            "'policy.hidden_sizes' must be list of int",
        ),
        (Config(train=TrainConfig(gamma="0.9")), "'train.gamma' must be float, got '0.9'"),
        (Config(optimizer=OptimizerConfig(epsilon=0.0)), "'optimizer.epsilon' must be > 0"),
    ],
)
def test_a_config_built_in_python_is_validated(tmp_path, monkeypatch, cfg, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        pgrl.train(cfg, out=tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # without out, the run would go to ./runs/<name>
    with pytest.raises(ConfigError, match=re.escape(message)):
        pgrl.train(cfg)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the directory

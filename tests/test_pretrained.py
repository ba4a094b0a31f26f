"""Weights files, the shipped Pong agent, and a short Pong training with each backend."""

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import pgrl
from pgrl.checkpoint import CheckpointError, load_checkpoint
from pgrl.config import load_config
from pgrl.play import evaluate, export_weights
from pgrl.reinforce import train

DATA = Path(__file__).parent / "data"
SHIPPED = Path(str(resources.files("pgrl.pretrained").joinpath("pong.npz")))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pgrl.cli", *args], capture_output=True, text=True)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cartpole")
    cfg = load_config("configs/cartpole.toml", ["log.progress=false", "train.episodes=40"])
    train(cfg, out=run)
    return run


# ----- the shipped agent -----


def test_shipped_agent_is_small_float32_weights_only_package_data():
    assert SHIPPED.is_file(), "pgrl/pretrained/pong.npz must ship with the package"
    assert SHIPPED.stat().st_size <= 6 * 2**20
    with np.load(SHIPPED, allow_pickle=False) as npz:
        names = set(npz.files)
        assert str(npz["kind"]) == "pgrl-weights"
        weights = {k: npz[k] for k in names if k.startswith("w_")}
    assert not any(k.startswith("opt_") for k in names), "weights only: no optimizer state"
    # a categorical head over NOOP, UP, DOWN (pgrl/pretrained/pong.toml)
    assert {k: w.shape for k, w in weights.items()} == {"w_W1": (6400, 200), "w_W2": (200, 3)}
    assert all(w.dtype == np.float32 for w in weights.values())


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_shipped_agent_loads_by_name_into_each_backend(backend):
    policy = pgrl.load_policy("pong", backend=backend)
    assert policy.backend == backend and policy.dtype == np.float32
    assert policy.obs_dim == 6400 and policy.hidden_sizes == (200,)
    assert policy.head == "categorical" and policy.n_actions == 3


def test_shipped_agent_gives_identical_probabilities_in_both_backends():
    with np.load(DATA / "pong_frames.npz", allow_pickle=False) as npz:
        frames = npz["frames"]
    assert frames.dtype == np.int8 and frames.shape == (64, 6400)
    p_np = pgrl.load_policy("pong", backend="numpy").action_probs(frames)
    p_tf = pgrl.load_policy("pong", backend="tensorflow").action_probs(frames)
    assert p_np.dtype == p_tf.dtype == np.float32 and p_np.shape == (64, 3)
    np.testing.assert_allclose(p_tf, p_np, rtol=1e-5, atol=1e-7)
    assert np.array_equal(p_np.argmax(axis=1), p_tf.argmax(axis=1))
    # A trained agent, not a coin: it moves up on some frames and down on others, surely.
    up, down = p_np[:, 1], p_np[:, 2]
    assert up.max() > 0.99 and down.max() > 0.99 and up.min() < 0.01 and down.min() < 0.01


def test_shipped_agent_scores_points_against_the_builtin_opponent():
    # Two seeded games, greedy. An untrained policy loses 21-0 or 21-1; the shipped agent scored
    # +18 and +16 here (ale-py 0.12), and wins 20 of 20 such games (docs/results.md).
    result = evaluate("pong", episodes=2, seed=0)
    assert result["wins"] == 2 and result["mean"] >= 5, result


def test_eval_pong_short_name_through_the_cli():
    result = run_cli("eval", "pong", "--episodes", "1", "--sample")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["source"].endswith("pong.npz") and len(out["returns"]) == 1


# ----- weights files -----


def test_export_makes_a_weights_file_both_backends_load(cartpole_run, tmp_path):
    out = tmp_path / "w.npz"
    info = export_weights(cartpole_run / "checkpoint.npz", out, note="t")
    assert info["episodes"] == 40 and info["note"] == "t"
    ckpt = load_checkpoint(cartpole_run / "checkpoint.npz")
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    for backend in ("numpy", "tensorflow"):
        policy = pgrl.load_policy(out, backend=backend)
        assert policy.dtype == np.float32
        for name, w in policy.get_weights().items():
            np.testing.assert_array_equal(w, ckpt["weights"][name].astype(np.float32))
        full = pgrl.load_policy(cartpole_run / "checkpoint.npz", backend=backend)
        np.testing.assert_allclose(policy.action_prob(obs), full.action_prob(obs), rtol=1e-5)
    played = evaluate(out, episodes=2)
    assert played["source"] == str(out) and len(played["returns"]) == 2


def test_a_weights_file_cannot_be_resumed(cartpole_run, tmp_path):
    out = tmp_path / "w.npz"
    export_weights(cartpole_run / "checkpoint.npz", out)
    with pytest.raises(CheckpointError, match="weights file.*not resumed"):
        load_checkpoint(out)


def test_cli_export_and_bad_weights_files(cartpole_run, tmp_path):
    out = tmp_path / "w.npz"
    result = run_cli("export", str(cartpole_run / "checkpoint.npz"), str(out))
    assert result.returncode == 0, result.stderr
    umask = os.umask(0o22)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes files, not mkstemp's 0600
    assert run_cli("eval", str(out), "--episodes", "1").returncode == 0
    assert_one_line_error(run_cli("eval", "pongg"), "not a pretrained policy name", "pong")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(out.read_bytes()[:300])
    assert_one_line_error(run_cli("eval", str(truncated)), "corrupt or truncated")
    # A weights file whose W1 does not fit the network its config describes.
    with np.load(out, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["w_W1"] = arrays["w_W1"][:, :5]
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    assert_one_line_error(run_cli("eval", str(wrong)), "does not fit")
    with np.load(out, allow_pickle=False) as npz:  # plain arrays only: nothing to unpickle
        assert all(npz[k].dtype != object for k in npz.files)
    # a run directory stands for its checkpoint
    assert run_cli("eval", str(cartpole_run), "--episodes", "1").returncode == 0


def rewrite(src, dst, **changes):
    """A copy of an .npz with some arrays replaced (None: removed)."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        if v is None:
            arrays = {n: a for n, a in arrays.items() if not n.startswith(k)}
        else:
            arrays[k] = v
    np.savez(dst, **arrays)
    return dst


def test_cli_export_refuses_bad_sources_and_targets(cartpole_run, tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    ckpt.write_bytes((cartpole_run / "checkpoint.npz").read_bytes())
    before = ckpt.read_bytes()
    assert_one_line_error(run_cli("export", str(ckpt), str(ckpt)), "refusing to overwrite")
    other = tmp_path / "other.npz"
    other.write_bytes(before)
    assert_one_line_error(run_cli("export", str(ckpt), str(other)), "not a weights file")
    assert ckpt.read_bytes() == before and other.read_bytes() == before
    bad_toml = rewrite(ckpt, tmp_path / "bad_toml.npz", config=np.array("[policy\nx = 1"))
    assert_one_line_error(run_cli("export", str(bad_toml), str(tmp_path / "a.npz")), "config")
    bad_version = rewrite(ckpt, tmp_path / "bad_version.npz", format_version=np.array("one"))
    assert_one_line_error(run_cli("eval", str(bad_version)), "corrupt format version")
    nan = np.load(ckpt)["w_W1"] * np.nan
    bad_weights = rewrite(ckpt, tmp_path / "nan.npz", w_W1=nan)
    assert_one_line_error(run_cli("export", str(bad_weights), str(tmp_path / "b.npz")), "NaN")
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "w.npz"
    assert_one_line_error(run_cli("export", str(ckpt), str(target)), "cannot write")
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()


def test_resume_needs_the_optimizer_state(cartpole_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "metrics.csv", "updates.csv"):
        (run / name).write_bytes((cartpole_run / name).read_bytes())
    rewrite(cartpole_run / "checkpoint.npz", run / "checkpoint.npz", opt_=None)
    result = run_cli("train", "configs/cartpole.toml", "--out", str(run), "--resume")
    assert_one_line_error(result, "does not fit this network", "optimizer state")


# ----- Pong end to end -----


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_short_pong_training_with_two_envs(backend, tmp_path):
    cfg = load_config(
        "configs/pong.toml",
        [
            "log.progress=false",
            "env.num_envs=2",
            "train.batch_episodes=2",
            "train.episodes=4",
            "policy.dtype=float32",
        ],
    )
    summary = train(cfg, out=tmp_path, backend=backend)
    assert summary["episodes"] == 4 and summary["updates"] == 2
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")
    assert ckpt["backend"] == backend and int(ckpt["optimizer_state"]["step"]) == 2
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 4 episodes

"""Rollout workers that own the policy: every runner and worker count gives the same bits.

The slots' gradient parts add up to the whole batch's gradient (against the plain gradient of
the concatenated batch, both backends); ``local`` with 4 slots, ``processes`` 2 x 2 and 4 x 1
train identical runs (metrics, updates and weights, float64, both backends, with and without the
value baseline; Pong too); a run resumes under another runner; a worker killed mid-batch is
restarted and its slots replayed, the run unchanged.
"""

import csv
import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from pgrl.checkpoint import load_checkpoint
from pgrl.config import ConfigError, load_config
from pgrl.policies import make_policy, make_value_net
from pgrl.reinforce import reinforce_update, train
from pgrl.returns import batch_returns, center_and_scale, pool_moments, standardize_advantages
from pgrl.rollout import collect_episodes, make_vector_env, slot_generators
from pgrl.slots import Slots, add_in_order
from pgrl.workers import ProcessRunner

QUIET = ["log.progress=false", "train.checkpoint_every=1"]
CARTPOLE = ["train.episodes=60", "train.batch_episodes=10", *QUIET]
VALUE = ["train.baseline='value'", "value.steps=2"]
LOCAL4 = ["env.num_envs=4"]
PROCESSES = {
    "2x2": ["env.runner='processes'", "env.num_workers=2", "env.envs_per_worker=2"],
    "4x1": ["env.runner='processes'", "env.num_workers=4", "env.envs_per_worker=1"],
}
PONG = [
    "train.episodes=4",
    "train.batch_episodes=2",
    "env.kwargs={max_episode_steps = 150}",
    *QUIET,
]


def _batch(n_slots=3, n_episodes=7, seed=0):
    envs = make_vector_env("CartPole-v1", n_slots, seed=seed, vectorization="sync")
    policy = make_policy("numpy", 4, hidden_sizes=(8,), seed=seed)
    try:
        return collect_episodes(envs, policy, slot_generators(seed, n_slots), n_episodes)
    finally:
        envs.close()


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@pytest.mark.parametrize("mode", ["batch", "episode", "none"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_slot_parts_add_up_to_the_whole_batch_gradient(backend, mode, reduction):
    """Slots + add_in_order against the plain gradient of the concatenated batch (1e-12)."""
    batch = _batch()
    cfg = load_config("cartpole", [f"train.standardize='{mode}'", *VALUE])
    kw = dict(hidden_sizes=(8,), seed=1, reduction=reduction, bias=True)
    policy = make_policy(backend, 4, entropy_coef=0.01, **kw)
    value = make_value_net(backend, 4, **kw)
    slots = Slots(batch, policy, value, cfg)
    assert len(slots.parts) == 3  # episodes of 3 slots, round by round in the batch

    # the plain computation, on the whole batch
    returns = batch_returns(batch.rewards, batch.ep_bounds, 0.99, False)
    values = value.predict(batch.obs)
    advantages = standardize_advantages(returns - values, batch.ep_bounds, mode)
    expected = policy.gradients(batch.obs, batch.actions, advantages)
    expected_value = value.gradients(batch.obs, returns)

    center, scale = center_and_scale(pool_moments(m[0] for m in slots.moments))
    parts = slots.gradients(center, scale)
    grads, sums = add_in_order([p for p, _ in parts])
    value_grads, _ = add_in_order([v for _, v in parts])
    n = batch.steps if reduction == "mean" else 1
    assert sums["steps"] == batch.steps
    for name, g in expected.items():
        np.testing.assert_allclose(grads[name] / n, g, rtol=1e-12, atol=1e-12 * abs(g).max())
    for name, g in expected_value.items():
        got = value_grads[name] / n
        np.testing.assert_allclose(got, g, rtol=1e-12, atol=1e-12 * abs(g).max())
    loss = policy.loss(batch.obs, batch.actions, advantages) * n
    assert sums["loss"] == pytest.approx(loss, rel=1e-12, abs=1e-12)


def test_an_update_from_a_batch_in_hand_is_the_whole_batch_update():
    """reinforce_update on an EpisodeBatch (split into its slots) against one RMSprop step of the
    plain whole-batch gradient, with clipping, entropy and the mean reduction (1e-12)."""
    batch = _batch(n_slots=3, n_episodes=7)
    cfg = load_config("cartpole", ["optimizer.max_grad_norm=0.5", "policy.reduction='mean'"])
    kw = dict(hidden_sizes=(8,), seed=2, bias=True, entropy_coef=0.01, max_grad_norm=0.5)
    a, b = (make_policy("numpy", 4, reduction="mean", **kw) for _ in range(2))
    stats = reinforce_update(a, None, batch, cfg)
    returns = batch_returns(batch.rewards, batch.ep_bounds, 0.99, False)
    expected = b.update(batch.obs, batch.actions, standardize_advantages(returns, None, "batch"))
    for k, w in b.get_weights().items():
        np.testing.assert_allclose(a.get_weights()[k], w, rtol=1e-12, atol=1e-14)
    for k in ("loss", "grad_norm", "mean_prob", "entropy"):
        assert stats[k] == pytest.approx(expected[k], rel=1e-12), k


def _train(config: str, sets: list[str], out: Path, backend="numpy") -> tuple[list, dict]:
    train(load_config(config, sets), out=out, backend=backend)
    return _read(out)


def _read(out: Path) -> tuple[list, dict]:
    """metrics.csv and updates.csv rows (less seconds) and the final weights of a run."""
    rows = []
    for name in ("metrics.csv", "updates.csv"):
        with open(out / name, newline="") as f:
            rows += [
                {k: v for k, v in r.items() if k != "wall_time" and not k.endswith("_seconds")}
                for r in csv.DictReader(f)
            ]
    ckpt = load_checkpoint(out / "checkpoint.npz")
    weights = {f"policy/{k}": v for k, v in ckpt["weights"].items()}
    weights.update({f"value/{k}": v for k, v in (ckpt.get("value_weights") or {}).items()})
    return rows, weights


def _assert_same(a, b) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@pytest.mark.parametrize("baseline", ["none", "value"])
def test_every_runner_and_worker_count_trains_the_same_run(tmp_path, backend, baseline):
    sets = [*CARTPOLE, *(VALUE if baseline == "value" else [])]
    local = _train("cartpole", [*sets, *LOCAL4], tmp_path / "local", backend)
    assert len(local[0]) == 60 + 6  # 60 episodes, 6 updates
    for name, runner in PROCESSES.items():
        _assert_same(_train("cartpole", [*sets, *runner], tmp_path / name, backend), local)


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@pytest.mark.parametrize("baseline", ["none", "value"])
def test_pong_in_two_worker_processes_equals_two_local_envs(tmp_path, backend, baseline):
    sets = [*PONG, *(VALUE if baseline == "value" else [])]
    local = _train("pong", [*sets, "env.num_envs=2"], tmp_path / "local", backend)
    runner = ["env.runner='processes'", "env.num_workers=2"]
    _assert_same(_train("pong", [*sets, *runner], tmp_path / "processes", backend), local)


def test_a_worker_killed_during_a_run_leaves_the_run_unchanged(tmp_path):
    """SIGKILL one worker process (by its PID) a moment after an update, while the next batch
    is being played: the run is the undisturbed one."""
    sets = [*CARTPOLE, "train.episodes=100", *VALUE]
    local = _train("cartpole", [*sets, *LOCAL4], tmp_path / "local")
    killed, workers = [], []

    def report(progress, checkpointed):
        workers.append({p.pid for p in mp.active_children()})
        if progress["updates"] == 3:
            assert len(workers[-1]) == 2, workers  # the two workers
            timer = threading.Timer(0.005, _kill, (min(workers[-1]),))
            timer.start()
            killed.append(timer)

    cfg = load_config("cartpole", [*sets, *PROCESSES["2x2"]])
    train(cfg, out=tmp_path / "processes", report=report)
    killed[0].join()
    assert workers[-1] != workers[0]  # a new process took the killed one's place
    _assert_same(_read(tmp_path / "processes"), local)


def test_a_run_resumes_under_another_runner(tmp_path):
    whole = _train("cartpole", [*CARTPOLE, *LOCAL4], tmp_path / "whole")
    out = tmp_path / "switched"
    _train("cartpole", [*CARTPOLE, "train.episodes=30", *PROCESSES["2x2"]], out)
    train(load_config("cartpole", [*CARTPOLE, *LOCAL4]), out=out, resume=True)
    _assert_same(_read(out), whole)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("when", ["before play", "between play and gradients"])
def test_a_killed_worker_is_restarted_and_its_slots_replayed(when):
    cfg = load_config("cartpole", [*CARTPOLE, *VALUE, *PROCESSES["2x2"]])
    results = []
    for kill in (False, True):
        runner = ProcessRunner(cfg, "numpy")
        try:
            policy = make_policy("numpy", 4, hidden_sizes=(32,), seed=0, bias=True)
            value = make_value_net("numpy", 4, hidden_sizes=(64,), seed=0)
            rngs = slot_generators(0, 4)
            for update in range(3):
                if kill and update == 1 and when == "before play":
                    _kill(runner.pids[0])
                batch, slots = runner.play(policy, value, rngs, 10, False)
                if kill and update == 1 and when != "before play":
                    _kill(runner.pids[1])
                reinforce_update(policy, value, slots, cfg)
            assert runner.restarts == ([1, 0] if kill and when == "before play" else
                                       [0, 1] if kill else [0, 0])  # fmt: skip
            results.append((batch.ep_returns, policy.get_weights(), value.get_weights()))
        finally:
            runner.close()
    (ret_a, pa, va), (ret_b, pb, vb) = results
    np.testing.assert_array_equal(ret_a, ret_b)
    for a, b in ((pa, pb), (va, vb)):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_worker_that_keeps_dying_stops_the_run_with_one_line():
    cfg = load_config("cartpole", [*CARTPOLE, *PROCESSES["2x2"]])
    runner = ProcessRunner(cfg, "numpy")
    try:
        policy = make_policy("numpy", 4, hidden_sizes=(32,), seed=0, bias=True)
        runner.restarts[0] = 3  # its budget spent
        _kill(runner.pids[0])
        from pgrl.rollout import RolloutError

        with pytest.raises(RolloutError, match=r"^rollout worker 0 died more than 3 times"):
            runner.play(policy, None, slot_generators(0, 4), 10, False)
    finally:
        runner.close()


def test_too_many_worker_processes_is_one_line(tmp_path):
    cfg = load_config("cartpole", ["env.runner='processes'", "env.num_workers=1000", *QUIET])
    with pytest.raises(ConfigError, match=r"env.num_workers = 1000: more than 4 processes per"):
        train(cfg, out=tmp_path / "run")

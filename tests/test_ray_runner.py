"""Rollouts on Ray (``env.runner = "ray"``) on real namespaced clusters (tests/ray_cluster.py):
one node with two CPUs, and two nodes with one CPU each (one worker per node). Two workers of
two envs play exactly the runs of four local envs: the same metrics.csv and final weights, for
CartPole (REINFORCE with and without the value baseline, and PPO) and a short Pong run, with both
backends, the REINFORCE gradients computed at the workers; a killed worker is replaced by Ray and
the run is unchanged."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ray_cluster import FAST_HEALTH_CHECK, RayCluster, skip_reason

from pgrl.checkpoint import load_checkpoint
from pgrl.rundir import read_metrics

CARTPOLE = str(Path("configs/cartpole.toml").resolve())
PONG = str(Path("configs/pong.toml").resolve())
CARTPOLE_PPO = str(Path("configs/cartpole_ppo.toml").resolve())
RAY_RUNNER = ["env.runner=ray", "env.num_workers=2", "env.envs_per_worker=2"]
RUNS = {  # short runs: CartPole to 120 episodes, Pong 8 games cut at 150 steps
    "cartpole": (CARTPOLE, ["train.episodes=120"]),
    "pong": (
        PONG,
        ["train.episodes=8", "train.batch_episodes=4", "env.kwargs={max_episode_steps = 150}"],
    ),
    "cartpole-ppo": (CARTPOLE_PPO, ["train.episodes=48"]),  # the learner's update is PPO's
    # the value baseline: the workers' value-fit parts too, over two value steps
    "cartpole-value": (CARTPOLE, ["train.episodes=80", "train.baseline=value", "value.steps=2"]),
}


@pytest.fixture(scope="module", params=["one-node", "two-nodes"])
def cluster(request, tmp_path_factory):
    if reason := skip_reason():
        pytest.skip(reason)
    private = tmp_path_factory.mktemp("private")
    nodes, cpus = (1, 2) if request.param == "one-node" else (2, 1)
    with RayCluster(nodes, private, cpus_per_node=cpus, env=FAST_HEALTH_CHECK) as c:
        yield c


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """The local runner's runs with four envs, trained once for both clusters."""
    made = {}

    def run(name: str, backend: str) -> Path:
        if (name, backend) not in made:
            config, overrides = RUNS[name]
            out = tmp_path_factory.mktemp(f"local-{name}-{backend}")
            sets = [*overrides, f"policy.backend={backend}", "env.num_envs=4"]
            _check(_pgrl("train", config, *_sets(sets), "--out", str(out)))
            made[name, backend] = out
        return made[name, backend]

    return run


def _sets(overrides: list[str]) -> list[str]:
    return [a for s in [*overrides, "log.progress=false"] for a in ("--set", s)]


def _pgrl(*args: str, cluster=None, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pgrl.cli", *args]
    kw = dict(capture_output=True, text=True, timeout=timeout)
    return cluster.run_in_head(cmd, **kw) if cluster else subprocess.run(cmd, **kw)


def _check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-2000:]


def _assert_same_run(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    for column in ("episode", "steps", "return", "running_return", "length", "update"):
        np.testing.assert_array_equal(ma[column], mb[column], err_msg=column)
    wa = load_checkpoint(a / "checkpoint.npz")["weights"]
    wb = load_checkpoint(b / "checkpoint.npz")["weights"]
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    va = load_checkpoint(a / "checkpoint.npz").get("value_weights") or {}
    vb = load_checkpoint(b / "checkpoint.npz").get("value_weights") or {}
    assert va.keys() == vb.keys()
    for k in va:
        np.testing.assert_array_equal(va[k], vb[k], err_msg=f"value {k}")


def _rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def _workers() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "ray::RolloutWorker"], capture_output=True, text=True)
    return set(found.stdout.split())


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
@pytest.mark.parametrize("name", list(RUNS))
def test_two_workers_of_two_envs_play_the_run_of_four_local_envs(
    cluster, local_runs, name, backend
):
    config, overrides = RUNS[name]
    out = cluster.private_dir / f"{name}-{backend}"
    sets = [*overrides, f"policy.backend={backend}", *RAY_RUNNER]
    _check(_pgrl("train", config, *_sets(sets), "--out", str(out), cluster=cluster))
    _assert_same_run(out, local_runs(name, backend))
    with open(out / "updates.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(float(r["broadcast_seconds"]) > 0 for r in rows)
    assert all(float(r["rollout_seconds"]) > 0 <= float(r["transfer_seconds"]) for r in rows)
    ppo = name.endswith("ppo")  # PPO's gradients are the learner's; REINFORCE's the workers'
    assert (sum(float(r["gradient_seconds"]) for r in rows) > 0) != ppo


def test_a_killed_rollout_worker_is_replaced_and_the_run_is_unchanged(cluster, tmp_path):
    overrides = ["train.episodes=1000"]  # solved (and stopped) after about 560
    out = cluster.private_dir / "kill"
    cmd = [sys.executable, "-m", "pgrl.cli", "train", CARTPOLE, *_sets([*overrides, *RAY_RUNNER])]
    driver = subprocess.Popen(
        cluster.head_cmd([*cmd, "--out", str(out)]),
        env=cluster.driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and _rows(out / "metrics.csv") < 200:
        time.sleep(0.05)
    workers = _workers()
    assert workers and driver.poll() is None, "no rollout worker to kill"
    subprocess.run(["kill", "-9", min(workers)], check=True)
    replaced = False  # a new worker process takes the killed one's place
    while driver.poll() is None and not replaced:
        replaced = bool(_workers() - workers)
        time.sleep(0.05)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr[-2000:]
    assert replaced, "no new rollout worker took the killed one's place"
    local = tmp_path / "local"
    _check(_pgrl("train", CARTPOLE, *_sets([*overrides, "env.num_envs=4"]), "--out", str(local)))
    _assert_same_run(out, local)


def test_more_workers_than_cpus_is_one_line(cluster, tmp_path):
    sets = _sets(["env.runner=ray", "env.num_workers=3"])
    done = _pgrl("train", CARTPOLE, *sets, "--out", str(tmp_path / "x"), cluster=cluster)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pgrl train: error: env.num_workers = 3: the Ray cluster has 2 CPUs, and each rollout "
        "worker takes one"
    ]
    assert not (tmp_path / "x").exists()


def test_a_killed_learner_resumes_from_its_checkpoint_with_the_same_run(cluster, tmp_path):
    overrides = ["train.episodes=1000", "train.checkpoint_every=1"]
    out = cluster.private_dir / "learner-kill"
    sets = _sets([*overrides, *RAY_RUNNER])
    cmd = [sys.executable, "-m", "pgrl.cli", "train", CARTPOLE, *sets, "--out", str(out)]
    driver = subprocess.Popen(cluster.head_cmd(cmd), env=cluster.driver_env())
    deadline = time.time() + 120
    while time.time() < deadline and _rows(out / "metrics.csv") < 200:
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before the learner could be killed"
    driver.kill()  # `ip netns exec` execs the learner: this is its process
    driver.wait()
    _check(_pgrl("train", CARTPOLE, *sets, "--out", str(out), "--resume", cluster=cluster))
    local = tmp_path / "local"
    _check(_pgrl("train", CARTPOLE, *_sets([*overrides, "env.num_envs=4"]), "--out", str(local)))
    _assert_same_run(out, local)

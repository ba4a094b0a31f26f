"""Pinned numbers: short runs whose metrics.csv and updates.csv rows (less wall-clock columns) and
final weights must equal files recorded earlier (tests/data/pinned/), so that a restructuring of
the code cannot change what pgrl computes.

Float64 only: both heads, both backends, the value baseline, the entropy bonus, gradient clipping,
the mean reduction and PPO. On the machine that recorded them the runs reproduce bit for bit; the
comparison allows 1e-9 relative in floats, because another CPU may give BLAS other kernels (other
last bits), while every episode, step and return must stay as recorded. Re-record (only for an
intended change of the numbers) with ``python tests/test_pinned.py [NAME ...]``. updates.csv
columns added after a recording must be NaN in its run (a column of a feature it does not use).
The runs read their own copies of the configs (tests/data/pinned/*.toml), so that retuning a
shipped config changes no pinned number.
"""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from pgrl.checkpoint import load_checkpoint
from pgrl.config import load_config
from pgrl.reinforce import train

DATA = Path(__file__).parent / "data" / "pinned"
QUIET = ["log.progress=false", "train.checkpoint_every=1"]

# name -> (config, backend, overrides)
RUNS = {
    "cartpole": ("cartpole", ["train.episodes=100"]),
    "cartpole-extras": (
        "cartpole",
        [
            "train.episodes=100",
            "optimizer.entropy_coef=0.01",
            "optimizer.max_grad_norm=5.0",
            "train.baseline='value'",
            "policy.reduction='mean'",
        ],
    ),
    "acrobot": ("acrobot", ["train.episodes=60"]),
    "acrobot-extras": (
        "acrobot",
        [
            "train.episodes=60",
            "optimizer.entropy_coef=0.02",
            "optimizer.max_grad_norm=1.0",
            "train.baseline='value'",
            "train.standardize='episode'",
        ],
    ),
    "cartpole-ppo": (
        "cartpole_ppo",
        ["train.episodes=48", "ppo.clip_value=1.0", "ppo.target_kl=0.02"],
    ),
    "acrobot-ppo": ("acrobot_ppo", ["train.episodes=30", "optimizer.entropy_coef=0.01"]),
}
BACKENDS = ("numpy", "tensorflow")


def _rows(path: Path) -> list[dict]:
    """A CSV's rows without its wall-clock columns."""
    with open(path, newline="") as f:
        return [
            {k: v for k, v in r.items() if k != "wall_time" and not k.endswith("_seconds")}
            for r in csv.DictReader(f)
        ]


def _run(name: str, backend: str, out: Path) -> tuple[list[dict], dict]:
    """metrics.csv and updates.csv rows (one list) and the final weights of a pinned run."""
    config, overrides = RUNS[name]
    cfg = load_config(DATA / f"{config}.toml", [*QUIET, *overrides])
    train(cfg, out=out, backend=backend)
    rows = _rows(out / "metrics.csv") + _rows(out / "updates.csv")
    ckpt = load_checkpoint(out / "checkpoint.npz")
    weights = {f"policy/{k}": v for k, v in ckpt["weights"].items()}
    weights.update({f"value/{k}": v for k, v in (ckpt.get("value_weights") or {}).items()})
    return rows, weights


def _read(name: str, backend: str) -> tuple[list[dict], dict]:
    rows = _rows(DATA / f"{name}-{backend}-metrics.csv") + _rows(
        DATA / f"{name}-{backend}-updates.csv"
    )
    with np.load(DATA / f"{name}-{backend}.npz") as z:
        weights = {k: z[k] for k in z.files}
    return rows, weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(RUNS))
def test_run_equals_recorded(name, backend, tmp_path, request):
    if backend == "tensorflow":
        request.getfixturevalue("tf")
    rows, weights = _run(name, backend, tmp_path / "run")
    want_rows, want_weights = _read(name, backend)
    assert len(rows) == len(want_rows)
    for got, want in zip(rows, want_rows, strict=True):
        assert want.keys() <= got.keys()
        assert all(got[key] == "nan" for key in got.keys() - want.keys()), got
        for key in want:
            a, b = float(got[key]), float(want[key])
            assert np.isclose(a, b, rtol=1e-9, atol=0, equal_nan=True), (key, got, want)
    assert sorted(weights) == sorted(want_weights)
    for k in weights:
        np.testing.assert_allclose(weights[k], want_weights[k], rtol=1e-9, atol=1e-12, err_msg=k)


def record(names: list[str]) -> None:
    """Write tests/data/pinned/ from this checkout's code: the runs ``names`` (all if none)."""
    import tempfile

    DATA.mkdir(parents=True, exist_ok=True)
    for name in names or RUNS:
        for backend in BACKENDS:
            with tempfile.TemporaryDirectory() as tmp:
                _, weights = _run(name, backend, Path(tmp) / "run")
                for table in ("metrics", "updates"):
                    rows = _rows(Path(tmp) / "run" / f"{table}.csv")
                    with open(DATA / f"{name}-{backend}-{table}.csv", "w", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                        writer.writeheader()
                        writer.writerows(rows)
            np.savez(DATA / f"{name}-{backend}.npz", **weights)
            print(name, backend)


if __name__ == "__main__":
    sys.exit(record(sys.argv[1:]))

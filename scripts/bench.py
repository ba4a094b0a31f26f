"""pgrl benchmarks. Each prints ratios against a baseline measured in the same run.

python scripts/bench.py policy    # us per action_prob / update, NumPy vs TensorFlow
python scripts/bench.py rollout   # env steps/s of rollouts against the raw env
python scripts/bench.py train     # env steps/s of whole training runs (updates included)
python scripts/bench.py sweep     # a CartPole sweep: local executor vs namespaced Ray clusters
python scripts/bench.py runner    # Pong's rollout workers (processes, Ray) vs local; scaling
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SUITES = {
    "policy": "bench_policy",
    "rollout": "bench_rollout",
    "train": "bench_train",
    "sweep": "bench_sweep",
    "runner": "bench_runner",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print(f"usage: python scripts/bench.py {{{','.join(SUITES)}}} [options]", file=sys.stderr)
        sys.exit(2)
    module = __import__(SUITES[sys.argv[1]])
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()

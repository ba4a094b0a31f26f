#!/bin/sh
# Bring the namespaced Ray test cluster (tests/ray_cluster.py) up or down by hand (root only).
#   scripts/test_cluster.sh up [--nodes 1|2] [--cpus-per-node N] [--private-dir DIR]
#   scripts/test_cluster.sh status
#   scripts/test_cluster.sh down
# Drivers: ip netns exec pgrl-head env RAY_ADDRESS=10.213.7.1:6379 .venv/bin/python driver.py
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
cd "$root"
exec "$python" tests/ray_cluster.py "$@"

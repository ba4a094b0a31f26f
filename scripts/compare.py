"""Compare backends from a script: the same code as ``pgrl compare``.

python scripts/compare.py configs/cartpole.toml --seeds 0 1 2 --out runs/compare
"""

import sys

from pgrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))

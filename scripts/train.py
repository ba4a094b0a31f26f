"""Train from a config, for users who run scripts: the same code as ``pgrl train``.

python scripts/train.py configs/cartpole.toml --backend tensorflow --out runs/cp-tf
"""

import sys

from pgrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

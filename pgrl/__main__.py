"""``python -m pgrl``: the ``pgrl`` command."""

import sys

from pgrl.cli import main

sys.exit(main())

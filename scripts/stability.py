"""``python scripts/stability.py`` = ``lossbench-stability`` (``make stability``): see ``lossbench.stability``."""

import sys

from lossbench.stability import main

if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the forum's claims with paired statistics: ``python scripts/reproduce.py {mnist,multilabel}``.

See ``lossbench/reproduce.py`` for the protocol and ``--help`` for the options.
"""

import sys

from lossbench.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

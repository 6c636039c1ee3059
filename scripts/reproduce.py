"""Reproduce the forum's claims with paired statistics: ``python scripts/reproduce.py {mnist,multilabel}``
(the same as ``lossbench-reproduce``; ``--reanalyse REPORT_DIR`` recomputes a report without training).

See ``lossbench/analysis/reproduce/`` for the protocol and ``--help`` for the options.
"""

import sys

from lossbench.analysis.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

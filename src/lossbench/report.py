"""``python -m lossbench.report``: kept so the command people know still works; the report lives in
``lossbench.analysis.report`` (console script ``lossbench-report``)."""

import sys

from lossbench.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())

"""``python scripts/benchmark.py`` = ``lossbench-bench`` (``make bench``): see ``lossbench.bench``."""

from lossbench.bench import main

if __name__ == "__main__":
    main()

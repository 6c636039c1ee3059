"""``python scripts/make_coco_sample.py`` = ``python -m lossbench.data.coco_sample``: a small COCO-format dataset
of multi-digit MNIST canvases (see ``lossbench.data.coco_sample``)."""

import sys

from lossbench.data.coco_sample import main

if __name__ == "__main__":
    sys.exit(main())

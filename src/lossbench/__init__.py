"""lossbench: measured answers to which classification loss to use."""

__version__ = "0.1.0"

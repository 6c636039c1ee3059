"""What the reproduction ran on: the machine in words and the CPU seconds spent."""

from __future__ import annotations

import os
import platform
import resource


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{os.cpu_count()} vCPU {cpu}"
    if device == "gpu" and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(0)} GPU, {text}"
    return f"{text}; torch {torch.__version__}, Python {platform.python_version()}"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

"""``summary.json``: the one file every run writes and every sweep/report reads.

Fields: ``status`` ("completed", "diverged", "failed" or "skipped"), ``config`` (the resolved Hydra
config), ``task``, ``num_classes`` and ``classes`` (the class names, in output order), ``metrics`` (flat name -> number, final test metrics), ``epochs``, ``wall_time_s``,
``run_dir``, ``versions`` and ``git_commit`` (traceability), ``noise`` (training-label perturbation and its
realised rate, lossbench/noise.py), ``divergence`` / ``error`` when relevant.
Written atomically: a kill never leaves half a JSON file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossbench.paths import SUMMARY_FILE
from lossbench.redaction import redact_secrets

STATUSES = ("completed", "diverged", "failed", "skipped")
_UMASK = os.umask(0o022)  # read once (setting it is the only way), restored at once
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, sync it, rename it over ``path``: a kill or a full
    disk leaves either the old file or the new one, never half of one (same folder: the rename is atomic).

    A write that fails for want of space or permission raises ``OSError`` naming ``path`` (not the temporary
    file), also when the writer hid it (``torch.save`` raises ``RuntimeError`` with the ``OSError`` as context).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode open() would
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        cause = os_error(err)
        if cause is not None and not isinstance(err, KeyboardInterrupt):
            raise OSError(cause.errno, cause.strerror, str(path)) from err
        raise
    return path


def os_error(err: BaseException | None) -> OSError | None:
    """The first ``OSError`` with an errno in an exception and its causes / contexts."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        # ``raise ... from None`` hides the context: what it replaced is not the reason
        err = err.__cause__ if err.__cause__ is not None else None if err.__suppress_context__ else err.__context__
    return None


def write_json_atomic(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, default=_jsonable) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def _jsonable(value: Any):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: non-finite numbers are stored as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"name": "x"}}`` -> ``{"loss.name": "x"}`` (a summary's or ``.hydra/config.yaml``'s
    config; lists and other values as they are, an empty section gives no key)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    if summary.get("status") not in STATUSES:
        raise ValueError(f"summary status must be one of {STATUSES}, got {summary.get('status')!r}")
    path = Path(run_dir) / SUMMARY_FILE
    write_json_atomic(path, summary)
    return path


def read_summary(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    with open(path) as f:
        return json.load(f)


def find_summaries(roots: Iterable[Path]) -> list[Path]:
    """Every ``summary.json`` under the given folders (or the files themselves), sorted."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if root.is_file() and root.name == SUMMARY_FILE:
            found.add(root)
        elif root.is_dir():
            found.update(root.rglob(SUMMARY_FILE))
    return sorted(found)


def versions() -> dict[str, str]:
    import lightning
    import torch
    import torchmetrics

    from lossbench import __version__

    return {"lossbench": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "torchmetrics": torchmetrics.__version__}


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the lossbench checkout (with ``-dirty`` when it has uncommitted changes)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def run_summary(cfg: DictConfig, task: str, metrics: dict[str, Any], epochs: int, global_step: int,
                wall_time_s: float, run_dir: Path, divergence: dict[str, float] | None, *,
                classes: list[str], noise: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a trained run (a single run and each member write the same);
    ``classes``: the dataset's class names (``dm.classes``); ``noise``: the training-label perturbation's
    settings and realised rate (``dm.noise_record``)."""
    summary = {
        "status": "diverged" if divergence else "completed",
        "config": redact_secrets(OmegaConf.to_container(cfg, resolve=True)),
        "task": task,
        "num_classes": len(classes),
        "classes": [str(c) for c in classes],
        "metrics": metrics,
        "epochs": epochs,
        "global_step": global_step,
        "wall_time_s": round(wall_time_s, 3),
        "run_dir": str(run_dir),
        "versions": versions(),
        "git_commit": git_commit(),
    }
    if noise is not None:
        summary["noise"] = noise
    if divergence:
        # the loss as text ("nan", "inf"): JSON has no non-finite numbers
        summary["divergence"] = {"step": divergence["step"], "loss": str(divergence["loss"])}
    return summary


def failure_summary(cfg: DictConfig, run_dir: Path, status: str, error: BaseException) -> dict[str, Any]:
    return {
        "status": status,
        "config": redact_secrets(OmegaConf.to_container(cfg, resolve=False)),
        "metrics": {},
        "error": redact_secrets(f"{type(error).__name__}: {error}".splitlines()[0]),
        "run_dir": str(run_dir),
        "versions": versions(),
        "git_commit": git_commit(),
    }

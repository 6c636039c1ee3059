"""Continue an interrupted run from its last checkpoint.

A run is identified by its configuration, not by its directory: every start gets a fresh Hydra run
directory (``<output_root>/<run_name>/<time>``, or ``<output_root>/multirun/<time>/<n>_<run_name>``),
and ``resume`` decides whether it begins from scratch or from the ``checkpoints/last.ckpt`` of an
earlier *attempt* -- a run directory under ``output_root`` whose ``.hydra/config.yaml`` resolves to
the same configuration (keys in ``MAY_DIFFER`` aside).

- ``resume=auto`` (default): look at the newest attempt of the same configuration that left a
  checkpoint or a summary. If it is unfinished (no summary, or ``status: failed``) and has a
  checkpoint, continue from it; if it finished, start a new run. So running the same command again
  after a kill, a crash or a Slurm requeue continues where it stopped, and a finished run is not
  touched.
- ``resume=true``: the same, but it is an error when there is nothing to continue.
- ``resume=false``: always start from scratch.
- ``resume=<path>``: continue from that run directory's ``checkpoints/last.ckpt`` or that ``.ckpt``.

The continued run writes into its own new directory; its ``summary.json`` records ``resumed_from``
(the checkpoint used), and its ``metrics.csv`` holds the epochs after the resume point. The earlier
directory is left as it was. Checkpoints are read with ``torch.load(weights_only=True)``.

Two live processes never continue one checkpoint, nor does a run continue the checkpoint of a run that is
still training: the CLI passes a ``claim`` (``lossbench.locks.Locks.claim``) that takes the checkpoint's
lock file; ``auto`` passes over an attempt whose lock a live process holds (it is running, not
interrupted) and looks at older ones; a path or ``true`` that finds only such attempts is an error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lossbench.errors import ConfigError, DataError
from lossbench.locks import CheckpointInUse, Holder
from lossbench.paths import CHECKPOINT, HYDRA_CONFIG, SUMMARY_FILE
from lossbench.summary import flatten, read_summary, write_atomic

log = logging.getLogger("lossbench")

FINISHED = ("completed", "diverged", "skipped")
# keys that may differ between attempts of one run: they change what is shown, not what is trained
MAY_DIFFER = ("resume", "print_config", "output_root", "trainer.progress_bar", "logger")
# folders inside a run directory, never run directories themselves
_NOT_RUN_DIRS = {CHECKPOINT.parent.name, HYDRA_CONFIG.parent.name, "wandb", "lightning_logs"}


@dataclass
class Attempt:
    run_dir: Path
    status: str | None  # the summary's status; None when it never wrote one (killed)
    checkpoint: Path | None
    mtime: float  # last activity: newest of config, checkpoint and summary

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def flat_config(container: dict[str, Any]) -> dict[str, Any]:
    """``{"optimizer.lr": 0.001, ...}`` of a resolved config, without the keys in ``MAY_DIFFER``."""
    return {k: v for k, v in flatten(container).items()
            if not any(k == key or k.startswith(key + ".") for key in MAY_DIFFER)}


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def _attempt(run_dir: Path) -> Attempt:
    summary, checkpoint = run_dir / SUMMARY_FILE, run_dir / CHECKPOINT
    status = None
    if summary.is_file():
        try:
            status = read_summary(summary).get("status")
        except (OSError, ValueError):
            status = None  # summaries are written atomically; an unreadable one was damaged later
    files = [p for p in (run_dir / HYDRA_CONFIG, summary, checkpoint) if p.is_file()]
    return Attempt(run_dir, status, checkpoint if checkpoint.is_file() else None,
                   max(p.stat().st_mtime for p in files))


def _candidate_dirs(output_root: Path, run_name: str):
    """Run directories under ``output_root`` whose path names ``run_name`` (both layouts of
    configs/train.yaml do) and that left a checkpoint or a summary."""
    for dirpath, dirnames, _ in os.walk(output_root):
        dirnames[:] = sorted(d for d in dirnames if d not in _NOT_RUN_DIRS)
        path = Path(dirpath)
        if not (path / HYDRA_CONFIG).is_file():
            continue
        dirnames.clear()  # a run directory holds no other run directories
        parts = path.relative_to(output_root).parts
        if not any(p == run_name or p.endswith("_" + run_name) for p in parts):
            continue
        if (path / CHECKPOINT).is_file() or (path / SUMMARY_FILE).is_file():
            yield path


def same_config_attempts(cfg: DictConfig, output_root: Path) -> list[Attempt]:
    """Earlier attempts of this configuration under ``output_root``, newest first."""
    output_root = Path(output_root)
    if not output_root.is_dir():
        return []
    wanted = flat_config(OmegaConf.to_container(cfg, resolve=True))
    found = []
    for run_dir in _candidate_dirs(output_root, str(cfg.run_name)):
        try:
            theirs = flat_config(OmegaConf.to_container(OmegaConf.load(run_dir / HYDRA_CONFIG), resolve=True))
        except Exception:  # an unreadable or unresolvable old config is simply not the same run
            continue
        if not config_differences(wanted, theirs):
            found.append(_attempt(run_dir))
    return sorted(found, key=lambda a: a.mtime, reverse=True)


class UnreadableCheckpoint(DataError):
    """A checkpoint that weights-only loading cannot read (truncated, damaged, or holding pickled code)."""

    def __init__(self, path: Path, reason: str, start_over: str = "resume=false") -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: not a readable Lightning checkpoint ({reason}); delete it, or start over "
                         f"with {start_over}")

    def with_command(self, command: str) -> UnreadableCheckpoint:
        """The same error naming the whole command that starts over."""
        return UnreadableCheckpoint(self.path, self.reason, f"this command: {command}")


def checkpoint_info(path: Path) -> dict[str, int]:
    """Epochs trained and optimizer steps taken when a Lightning checkpoint was saved, read with
    weights-only loading (an epoch-end checkpoint counts its epoch as trained)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        epochs = ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        return {"epochs": int(epochs), "global_step": int(ckpt["global_step"])}
    except Exception as err:
        raise UnreadableCheckpoint(path, load_error_reason(err)) from None


def load_error_reason(err: BaseException) -> str:
    """What went wrong in ``torch.load``, in one line: for weights-only loading its specific reason (the
    global it refused), not its generic advice to load the file with ``weights_only=False``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch colours its advice
    if "Weights only load failed" in text:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("WeightsUnpickler error: "):
                return "weights-only loading refused it: " + line.removeprefix("WeightsUnpickler error: ").split(
                    ". Please use")[0].rstrip(".")
            if line.startswith("Trying to load unsupported GLOBAL"):
                return "weights-only loading refused it: " + line.rstrip(".")
    return text.splitlines()[0] if text else type(err).__name__


def find_checkpoint(cfg: DictConfig, claim: Callable[[Path], Holder | None] | None = None) -> Path | None:
    """The checkpoint this run continues from, following ``cfg.resume`` (see the module docstring).

    ``claim(checkpoint)`` takes the checkpoint for this run and returns None, or returns the live
    process that holds it (lossbench.locks); without it every checkpoint counts as free."""
    mode = cfg.get("resume", False)
    if mode is False or mode is None:
        return None
    if isinstance(mode, str) and mode != "auto":
        path = Path(mode)
        checkpoint = path / CHECKPOINT if path.is_dir() else path
        if not checkpoint.is_file():
            raise ConfigError(f"resume={mode!r}: no such checkpoint ({checkpoint}); allowed: auto, true, false, "
                              "or the path of a run directory holding checkpoints/last.ckpt or of a .ckpt file")
        holder = claim(checkpoint) if claim else None
        if holder is not None:
            raise CheckpointInUse(checkpoint, holder)
        return checkpoint
    attempts = same_config_attempts(cfg, Path(cfg.output_root))
    running = []
    for attempt in attempts:
        if attempt.finished:
            break
        if attempt.checkpoint is None:
            continue
        holder = claim(attempt.checkpoint) if claim else None
        if holder is None:
            return attempt.checkpoint
        running.append(attempt.run_dir)  # still training, or being continued: not interrupted
        log.info("not continuing %s: in use by %s", attempt.checkpoint, holder.describe())
    if mode is True:
        newest = f"; the newest, {attempts[0].run_dir}, is {attempts[0].status}" if attempts else ""
        if running:
            newest = f"; {len(running)} in use by running processes, e.g. {running[0]}"
        raise ConfigError(f"resume=true: no unfinished run of this configuration with {CHECKPOINT} under "
                          f"{cfg.output_root}{newest}; use resume=auto or resume=false to start a new run")
    return None


def rng_state() -> dict[str, Any]:
    """The global torch RNG state, saved in each checkpoint (``lossbench.module``) and restored on resume, so that
    random operations after the resume point (dropout) draw what an uninterrupted run would have drawn."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint_file(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a Python file: torch's own file writer turns a full disk into "basic_ios::clear:
    iostream error"; writing through ``f.write`` keeps the ``OSError`` (as the RuntimeError's context), which
    ``summary.write_atomic`` reports as one line naming the file."""
    with open(path, "wb") as f:
        torch.save(checkpoint, f)


def atomic_checkpoint_io():
    """Lightning's ``TorchCheckpointIO`` writing each checkpoint to a temporary file beside the target
    and renaming it into place. Lightning's own writer stages the file in the system temp folder and
    moves it, which is a plain copy -- interruptible -- when that folder is on another filesystem."""
    from lightning.fabric.utilities.cloud_io import get_filesystem
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
            if "file" not in get_filesystem(path).protocol:  # remote storage: Lightning's own writer
                return super().save_checkpoint(checkpoint, path, storage_options)
            write_atomic(Path(path), lambda tmp: save_checkpoint_file(checkpoint, tmp))

    return AtomicCheckpointIO()

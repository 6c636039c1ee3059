"""Entry point: ``python -m lossbench.train [hydra overrides]`` (``lossbench-train``).

Hydra composes the config and makes the run folder (a name no other run can have:
``lossbench.paths.unique_folder_name``); this module validates what needs no data, picks the checkpoint to
resume and locks it (``lossbench.locks``: no two live processes continue one checkpoint or write one run
folder's checkpoint), and hands one config (``lossbench.engine.train``) or its members (``seeds=`` /
``losses=``) to training.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lossbench import cli
from lossbench.config import validate_values
from lossbench.console import print_config_tree, print_results
from lossbench.engine import checkpoint_to_resume, train
from lossbench.errors import ConfigError, IncompleteSweep, UserError
from lossbench.locks import Locks
from lossbench.paths import CHECKPOINT, CONFIG_DIR
from lossbench.resume import UnreadableCheckpoint
from lossbench.summary import failure_summary, write_summary

log = logging.getLogger("lossbench")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# marks an exception raised by training (a crash: keeps its traceback), unlike one raised while Hydra composes
# the config from the overrides (bad input, e.g. data=0: "Config group override must be a string")
CRASHED_IN_TASK = "_lossbench_crashed_in_task"


def start_over_command() -> str:
    """The command that runs this job again from scratch: its overrides, ``resume=false`` instead of any
    ``resume=`` (in a sweep: this one job's values, as a single run)."""
    overrides = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").split("=", 1)[0] != "resume"]
    program = "lossbench-train" if Path(sys.argv[0]).name == "lossbench-train" else "python -m lossbench.train"
    return " ".join([program, *map(shlex.quote, overrides), "resume=false"])


def hold_own_checkpoint(locks: Locks, run_dir: Path) -> None:
    """Lock this run's checkpoint before training: a later ``resume=auto`` then passes it over while this
    process lives (it is running, not interrupted)."""
    locks.hold(run_dir / CHECKPOINT)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> None:
    """The Hydra task: one job of a run or a sweep."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("print_config"):
        print_config_tree(cfg)
    locks = Locks(run_dir)
    try:
        validate_values(cfg)  # before looking for checkpoints or reading data
        try:
            resume_from = checkpoint_to_resume(cfg, locks.claim)
        except UnreadableCheckpoint as err:
            raise err.with_command(start_over_command()) from None
        if cfg.trainer.get("checkpoint", True):
            hold_own_checkpoint(locks, run_dir)
        if cfg.get("seeds") is not None or cfg.get("losses") is not None:
            from lossbench.members import train_members  # several members in one pass

            for summary in train_members(cfg, run_dir, resume_from=resume_from):
                print_results(summary, Path(summary["run_dir"]))
            return
        summary = train(cfg, run_dir, resume_from=resume_from)
    except UserError as err:
        if not is_multirun():
            exit_with_error_line(err)
        # one bad combination in a sweep's product is skipped with its reason; the sweep goes on
        write_summary(run_dir, failure_summary(cfg, run_dir, "skipped", err))
        log.warning("skipped %s: %s", run_dir.name, err)
        return
    except Exception as err:
        # a crash is recorded (with its traceback in the job's log), then re-raised: Hydra's launcher
        # finishes the other jobs of a sweep first, then raises the first failure
        with contextlib.suppress(OSError):  # a full disk takes the failure summary too
            write_summary(run_dir, failure_summary(cfg, run_dir, "failed", err))
        cause = cli.write_error(err)
        if cause is not None and not is_multirun():
            exit_with_write_error(cause, run_dir)
        if is_multirun():
            log.exception("failed %s", run_dir.name)
        with contextlib.suppress(AttributeError):  # kept when a sweep's worker process pickles it back
            setattr(err, CRASHED_IN_TASK, True)
        raise
    finally:
        locks.release()
    print_results(summary, run_dir)


# the user's HYDRA_FULL_ERROR, read before main() sets it for Hydra
_user_full_error = os.environ.get("HYDRA_FULL_ERROR")


def exit_with_error_line(err: BaseException) -> None:
    cli.exit_with_error_line(err, show_traceback=_user_full_error == "1")


def exit_with_write_error(err: OSError, where: Path | None = None) -> None:
    cli.exit_with_write_error(err, where, show_traceback=_user_full_error == "1")


def main() -> None:
    """``lossbench-train`` / ``python -m lossbench.train``: bad input (lossbench's or Hydra's: unknown
    option, unknown key, unparsable override) ends with one line ``error: ...`` on stderr and exit
    code 2, no traceback unless ``HYDRA_FULL_ERROR=1`` (also when Hydra fails on the overrides with an error of
    its own kind, e.g. ``data=0``). A file that cannot be written (full disk, read-only
    or unwritable folder) ends with one line naming it and exit code 1. Crashes keep their traceback (exit
    code 1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    global _user_full_error
    _user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing several lines
    try:
        run()
    except IncompleteSweep as err:  # lines naming the jobs without a result, then the command to rerun them
        print(err, file=sys.stderr)
        sys.exit(1)
    except (UserError, HydraException, OmegaConfBaseException) as err:
        cause = cli.write_error(err)  # e.g. Hydra could not create the run folder, or its log file
        if cause is not None:
            exit_with_write_error(cause)
        exit_with_error_line(err)
    except Exception as err:
        cause = cli.write_error(err)
        if cause is not None:
            exit_with_write_error(cause)
        if getattr(err, CRASHED_IN_TASK, False):
            raise
        if _user_full_error == "1":
            raise
        # raised before any job ran: Hydra could not compose a config from these overrides
        exit_with_error_line(ConfigError(f"cannot compose the config from these overrides: {cli.error_line(err)}"))
    finally:
        if _user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = _user_full_error


if __name__ == "__main__":
    main()

"""Lock files that keep two live processes from training into, or continuing from, one checkpoint.

The lock of ``<run dir>/checkpoints/last.ckpt`` is ``last.ckpt.lock`` beside it, created with
``O_CREAT | O_EXCL`` (atomic, on NFS too) and holding JSON: the holder's pid, host, boot id and process
start time, its own run folder, since when, and a random token. A CLI run holds the lock of its own
checkpoint while it trains and the lock of the checkpoint it continues from (``resume``); it removes both
when it ends, by an error too. A process killed outright (SIGKILL, power loss) leaves its locks behind:

- **stale** (taken over by the next run): the lock names this host and its process is gone -- the boot
  id differs (the host restarted), no process has that pid (``kill(pid, 0)`` fails with ``ESRCH``), the
  process is a zombie, or the process with that pid started at another time than the holder did (the
  pid was reused; start times from ``/proc/<pid>/stat``). Or, on any host, the holder ran in an earlier
  incarnation of this very Slurm job (same ``SLURM_JOB_ID``, lower ``SLURM_RESTART_COUNT``): Slurm
  ends a job before it requeues it, so a requeued sweep job continues its own checkpoint;
- **live**: otherwise. A lock taken on another host is treated as live (its process cannot be checked
  from here); the error names the host, the pid and the file to delete if that process is gone.

Checking a lock and taking a stale one over happen under ``flock`` of the checkpoint folder, so of several
processes of one host that find the same stale lock, exactly one takes it over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from lossbench.errors import UserError

log = logging.getLogger("lossbench")


def lock_path(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".lock")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: read from the lock file, or this process."""

    pid: int
    host: str
    boot_id: str | None  # /proc/sys/kernel/random/boot_id: changes when the host restarts
    started: int | None  # process start time, clock ticks after boot (/proc/<pid>/stat, field 22)
    run_dir: str  # the holder's own run folder (DDP processes of one run share it)
    since: str  # UTC, ISO 8601
    token: str  # tells this process's own lock from an older one of a reused pid
    slurm_job: str | None = None  # SLURM_JOB_ID (kept when Slurm requeues the job)
    slurm_restart: int = 0  # SLURM_RESTART_COUNT: how often Slurm requeued that job before

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (run folder {self.run_dir}, since {self.since})"


class CheckpointInUse(UserError):
    """The checkpoint is trained into or continued from by another live process."""

    def __init__(self, checkpoint: Path, holder: Holder) -> None:
        self.checkpoint, self.holder = Path(checkpoint), holder
        lock = lock_path(checkpoint)
        super().__init__(f"{checkpoint} is in use by {holder.describe()}; wait for that run to end, or start a "
                         f"new one with resume=false (if that process no longer runs, delete {lock})")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _boot_id() -> str | None:
    text = _read("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of a process, from ``/proc/<pid>/stat``."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (command) ": field 3 onwards
    return fields[0], int(fields[19])


def _slurm_restart() -> int:
    value = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    return int(value) if value.isdigit() else 0


def this_process(run_dir: Path) -> Holder:
    stat = proc_stat(os.getpid())
    return Holder(pid=os.getpid(), host=socket.gethostname(), boot_id=_boot_id(),
                  started=stat[1] if stat else None, run_dir=str(run_dir),
                  since=datetime.now(timezone.utc).isoformat(timespec="seconds"), token=secrets.token_hex(8),
                  slurm_job=os.environ.get("SLURM_JOB_ID") or None, slurm_restart=_slurm_restart())


def is_alive(holder: Holder) -> bool:
    """Whether the holder's process may still run (see the module docstring)."""
    if holder.slurm_job and holder.slurm_job == os.environ.get("SLURM_JOB_ID") \
            and holder.slurm_restart < _slurm_restart():
        return False  # an earlier incarnation of this requeued Slurm job
    if holder.host != socket.gethostname():
        return True  # another host's process cannot be checked from here
    boot_id = _boot_id()
    if holder.boot_id and boot_id and holder.boot_id != boot_id:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    stat = proc_stat(holder.pid)
    if stat is None:
        return True  # no /proc here: kill(pid, 0) is all there is
    state, started = stat
    return state != "Z" and (holder.started is None or started == holder.started)


def read_holder(lock: Path) -> Holder | None:
    """The lock's holder; None when there is no lock file or it is unreadable (a holder killed between
    creating the file and writing it: it never held the checkpoint)."""
    try:
        return Holder(**json.loads(Path(lock).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def _folder_flock(folder: Path):
    """Exclusive ``flock`` of a folder while checking and taking over its locks (this host's processes
    only; where the filesystem has no flock, O_EXCL alone decides)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the flock


class Locks:
    """The checkpoint locks one run holds. Only the process of global rank 0 takes locks; the other DDP
    processes of the run only look (they share its run folder, so its locks count as theirs)."""

    def __init__(self, run_dir: Path, rank: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.rank = global_rank() if rank is None else rank
        self.me = this_process(self.run_dir)
        self.held: list[Path] = []

    def claim(self, checkpoint: Path) -> Holder | None:
        """Take the lock of ``checkpoint``; return None when this run now holds it, else its live holder."""
        lock = lock_path(checkpoint)
        if self.rank != 0:
            holder = read_holder(lock)
            mine = holder is None or holder.run_dir == str(self.run_dir) or not is_alive(holder)
            return None if mine else holder
        lock.parent.mkdir(parents=True, exist_ok=True)
        with _folder_flock(lock.parent):
            for _ in range(3):
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = read_holder(lock)
                    if holder is not None and holder.token == self.me.token:
                        return None  # already ours
                    if holder is not None and is_alive(holder):
                        return holder
                    log.info("taking over the stale lock %s%s", lock,
                             f" of {holder.describe()}, which no longer runs" if holder else "")
                    lock.unlink(missing_ok=True)
                    continue
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump(asdict(self.me), f)
                except BaseException as err:
                    lock.unlink(missing_ok=True)
                    if isinstance(err, OSError):  # a full disk: name the file
                        raise OSError(err.errno, err.strerror, str(lock)) from err
                    raise
                self.held.append(lock)
                return None
        raise RuntimeError(f"{lock}: could not be created, although no live process holds it")

    def hold(self, checkpoint: Path) -> None:
        """Take the lock of this run's own checkpoint, or raise ``CheckpointInUse``."""
        holder = self.claim(checkpoint)
        if holder is not None:
            raise CheckpointInUse(checkpoint, holder)

    def release(self) -> None:
        """Remove the lock files this run holds (those still carrying its token)."""
        for lock in self.held:
            holder = read_holder(lock)
            if holder is not None and holder.token == self.me.token:
                lock.unlink(missing_ok=True)
        self.held.clear()

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def global_rank() -> int:
    """This process's global rank (0 when it is no DDP process), read from the variables DDP launchers set
    in the order Lightning reads them (torchrun, Lightning's own launcher, Slurm, LSF); a process of a
    node other than the first is never rank 0."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value) or (1 if os.environ.get("NODE_RANK", "0").strip() not in ("", "0") else 0)
    return 0

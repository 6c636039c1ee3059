"""Stopping a reproduction: SIGINT, SIGTERM and SIGHUP become ``Interrupted`` in the main process, and
the pool's workers (each in its own process group, so a terminal's Ctrl-C reaches only the main process)
are stopped by it -- asked first, then killed with everything they started."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import active_children, get_context
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_S = 3.0  # a worker asked to stop unwinds (temporary files removed) within this; then it is killed


class Interrupted(BaseException):
    """A stop signal arrived. A ``BaseException``: a crashed run is recorded as failed (``except
    Exception``), a stopped one is not."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    for sig in STOP_SIGNALS:  # the first signal decides; the stop itself is not interrupted again
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, a stop signal raises ``Interrupted`` in the main thread; one ignored already
    stays ignored (``nohup`` ignores SIGHUP so that the command outlives its terminal)."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in before.items():
        if handler != signal.SIG_IGN:
            signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


# -- in a worker -----------------------------------------------------------------------------------------

_busy = False  # whether this worker is running a task (else a stop signal ends it at once)


def _worker_stop(signum: int, frame: Any) -> None:
    if not _busy:
        os._exit(128 + signum)
    _raise_interrupted(signum, frame)


def start_worker() -> None:
    """Pool initializer: a process group of its own (the main process alone decides when workers stop),
    and a stop signal that unwinds the running task."""
    os.setpgid(0, 0)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _worker_stop)


def run_task(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker; a stop signal ends the worker after the task has unwound (``finally``
    blocks and temporary-file clean-up run), so it takes no further task."""
    global _busy
    _busy = True
    try:
        return fn(*args)
    except Interrupted as stop:
        os._exit(stop.exit_code)
    finally:
        _busy = False


# -- in the main process ---------------------------------------------------------------------------------

def stop_workers(grace_s: float = GRACE_S) -> int:
    """Stop every worker process of this process: SIGTERM, up to ``grace_s`` to unwind, then SIGKILL to its
    whole process group (data-loading processes it started included). Returns how many there were."""
    workers = active_children()
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.join(1.0)
    return len(workers)


def in_workers(calls: Iterable[tuple[Callable[..., Any], tuple]], n_jobs: int) -> Iterator[tuple[int, Any]]:
    """``(i, fn(*args))`` for the ``i``-th call, as each finishes, from ``n_jobs`` spawned workers. Leaving
    early -- a stop signal, a task's error, the caller stopping the iteration -- stops every worker first."""
    with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn"), initializer=start_worker) as pool:
        try:
            futures = {pool.submit(run_task, fn, *args): i for i, (fn, args) in enumerate(calls)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:  # no worker trains on without us
            pool.shutdown(wait=False, cancel_futures=True)
            stop_workers()
            raise

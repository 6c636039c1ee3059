"""What every console script shares: bad input ends in one line ``error: ...`` on stderr and exit code 2;
a file that cannot be written (full disk, read-only or unwritable folder) in one line naming it, exit code 1.

Hydra's multi-line reports are condensed to what was wrong and what is allowed (``error_line``); the
traceback is shown only under ``HYDRA_FULL_ERROR=1``. Crashes keep their traceback (exit code 1).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

HYDRA_GRAMMAR_URL = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def error_line(err: BaseException) -> str:
    """One line for a user error: lossbench's own message, or Hydra's multi-line report condensed to
    what was wrong and what is allowed (unknown option -> the available ones; unknown key -> the keys)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        if group:
            return f"{group}={name!r} is unknown; available: {', '.join(err.options)}"
    if isinstance(err, OverrideParseException):
        reason = err.message.splitlines()[0] if err.message else "invalid syntax"
        return f"cannot parse the override {err.override!r}: {reason}; override syntax: {HYDRA_GRAMMAR_URL}"
    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key \
            and OmegaConf.is_dict(cause.parent_node):
        parent = cause.full_key.rpartition(".")[0] or "the top level"
        keys = ", ".join(str(k) for k in cause.parent_node.keys())
        return (f"{cause.full_key} is not a config key; keys of {parent}: {keys} "
                f"(to add a new key use +{cause.full_key}=...)")
    lines = []
    for line in str(err).splitlines():
        if line.startswith(("Config search path", "Set the environment variable HYDRA_FULL_ERROR")):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines) or type(err).__name__


def exit_with_error_line(err: BaseException, show_traceback: bool | None = None) -> None:
    """``error: <one line>`` on stderr and exit code 2 (the traceback instead when asked for)."""
    if show_traceback is None:
        show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if show_traceback:
        raise err
    print(f"error: {error_line(err)}", file=sys.stderr)
    sys.exit(2)


# errors of a write: no space, no quota, read-only filesystem, file too large (these four occur only when
# writing), and no permission
_WRITE_ONLY_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
WRITE_ERRNOS = (*_WRITE_ONLY_ERRNOS, errno.EACCES, errno.EPERM)


def write_error(err: BaseException) -> OSError | None:
    """The ``OSError`` of a failed write behind ``err`` (itself, its cause or its context), if any."""
    from lossbench.summary import os_error

    cause = os_error(err)
    return cause if cause is not None and cause.errno in WRITE_ERRNOS else None


def write_error_line(err: OSError, where: Path | None = None) -> str:
    """``cannot write <path>: No space left on device``; ``where`` names the folder when the error names no file."""
    reason = err.strerror or os.strerror(err.errno)
    if err.filename is None:
        return f"cannot write into {where}: {reason}" if where else f"cannot write: {reason}"
    return f"{'cannot write ' if err.errno in _WRITE_ONLY_ERRNOS else ''}{err.filename}: {reason}"


def exit_with_write_error(err: OSError, where: Path | None = None, show_traceback: bool | None = None) -> None:
    """``error: <one line>`` on stderr and exit code 1 (the traceback instead when asked for)."""
    if show_traceback is None:
        show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if show_traceback:
        raise err
    print(f"error: {write_error_line(err, where)}", file=sys.stderr)
    sys.exit(1)

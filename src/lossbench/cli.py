"""What every console script shares: bad input ends in one line ``error: ...`` on stderr and exit code 2.

Hydra's multi-line reports are condensed to what was wrong and what is allowed (:func:`error_line`); the
traceback is shown only under ``HYDRA_FULL_ERROR=1``. Crashes keep their traceback (exit code 1).
"""

from __future__ import annotations

import os
import sys

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

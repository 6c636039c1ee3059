"""Errors a user can fix. The CLI prints their message as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: the message names what was wrong and what is allowed."""


class ConfigError(UserError):
    """An invalid configuration value or combination."""


class DataError(UserError):
    """Missing, truncated or malformed data files."""


class IncompleteSweep(UserError):
    """Jobs of a Slurm sweep ended without a result (cancelled, killed, out of time): the message lists them,
    one line each, and the command that reruns only those. The CLI prints it as is and exits 1."""

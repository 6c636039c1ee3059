"""Secrets never reach a summary, log, report or W&B config: values of secret-looking environment
variables, and values stored under secret-looking keys, are replaced by ``<redacted>``."""

from __future__ import annotations

import os
from typing import Any

SECRET_NAME_PARTS = ("API_KEY", "APIKEY", "ACCESS_KEY", "PRIVATE_KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD",
                     "CREDENTIAL")
REDACTED = "<redacted>"


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values (8+ characters) of environment variables whose names look secret (``WANDB_API_KEY``,
    ``*_TOKEN``, ``*_SECRET``, ...)."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if len(v) >= 8 and any(p in k.upper() for p in SECRET_NAME_PARTS)]


def redact_secrets(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value with every string that contains a secret, and every value stored
    under a secret-looking key (``api_key``, ``token``, ...), replaced by ``<redacted>``."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k) and value[k] is not None else redact_secrets(value[k], secrets)
                for k in value}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v, secrets) for v in value]
    if isinstance(value, str) and any(s in value for s in secrets):
        return REDACTED
    return value


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and any(p in key.upper() for p in SECRET_NAME_PARTS)

"""No secret reaches a file lossbench writes: a fake W&B API key (and a fake token) in the environment
never appears in a run directory (summary, logs, checkpoints, Hydra's files, the offline W&B run) or in
the report, even when the config interpolates it."""

from __future__ import annotations

import os

import pytest

from lossbench.analysis.report import main as report_main
from lossbench.engine import train
from lossbench.redaction import REDACTED, redact_secrets, secret_values

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

FAKE_KEY = "0123456789abcdef0123456789abcdef0fakekey"  # 40 characters, like a real W&B key
FAKE_TOKEN = "tok-ThisIsNotARealToken-42"


def _files_containing(root, secret: str) -> list:
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_redaction_of_values_and_secret_looking_keys():
    secrets = secret_values({"WANDB_API_KEY": FAKE_KEY, "GITHUB_TOKEN": FAKE_TOKEN, "HOME": "/home/someone",
                             "SHORT_TOKEN": "abc"})
    assert secrets == [FAKE_KEY, FAKE_TOKEN]  # short values and ordinary variables are left alone
    config = {"logger": {"name": "wandb", "api_key": "anything"}, "note": f"key={FAKE_KEY}",
              "data": {"root": "/home/someone/data"}, "tags": [FAKE_TOKEN, "mnist"], "token": None}
    assert redact_secrets(config, secrets) == {
        "logger": {"name": "wandb", "api_key": REDACTED}, "note": REDACTED, "data": {"root": "/home/someone/data"},
        "tags": [REDACTED, "mnist"], "token": None}


def test_a_config_that_interpolates_the_key_is_redacted_in_the_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    cfg = compose_config([*TINY_SYNTHETIC, *TINY, "+note=${oc.env:WANDB_API_KEY}"])
    summary = train(cfg, tmp_path)
    assert summary["config"]["note"] == REDACTED
    assert _files_containing(tmp_path, FAKE_KEY) == []


def test_secret_and_password_variables_and_keys_are_redacted_in_the_summary(tmp_path, monkeypatch):
    """README: ``*_SECRET`` and ``*PASSWORD*`` variables, and keys named like them, never reach a summary."""
    values = {"STORAGE_CLIENT_SECRET": "s3cr3t-0123456789", "DB_PASSWORD_PROD": "hunter2-hunter2",
              "MYPASSWORDFILE": "pw-file-contents-42"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    cfg = compose_config([*TINY_SYNTHETIC, *TINY, "+note=${oc.env:STORAGE_CLIENT_SECRET}",
                          "+db.url='postgres://user:${oc.env:DB_PASSWORD_PROD}@host/db'",
                          "+db.file=${oc.env:MYPASSWORDFILE}", "+client_secret=typed-in", "+db.password=typed-in-too",
                          "+db.host=db.example.org"])
    summary = train(cfg, tmp_path)
    assert summary["config"]["note"] == REDACTED and summary["config"]["client_secret"] == REDACTED
    assert summary["config"]["db"] == {"url": REDACTED, "file": REDACTED, "password": REDACTED,
                                       "host": "db.example.org"}  # what is not secret stays
    for secret in [*values.values(), "typed-in"]:
        assert _files_containing(tmp_path, secret) == []


@pytest.mark.slow
def test_no_secret_in_any_file_of_a_wandb_run_or_its_report(tmp_path):
    env = {**os.environ, "WANDB_API_KEY": FAKE_KEY, "LOSSBENCH_TEST_TOKEN": FAKE_TOKEN, "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wandb-dir"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    result = run_cli([*TINY_SYNTHETIC, *TINY, "logger=wandb", "print_config=true", f"output_root={tmp_path}",
                      "+note=${oc.env:WANDB_API_KEY}"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = [p.parent for p in tmp_path.rglob("summary.json")]
    assert len(run_dirs) == 1 and list((run_dirs[0] / "wandb").glob("offline-run-*")), "no offline W&B run"
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert list((tmp_path / "report").iterdir())
    for secret in (FAKE_KEY, FAKE_TOKEN):
        assert _files_containing(tmp_path, secret) == []
        assert secret not in result.stdout + result.stderr

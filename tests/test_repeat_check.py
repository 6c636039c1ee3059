"""``scripts/reproduce.py --repeat-check N`` trains the first N seed runs (whole groups of members trained
together) a second time and reports whether every test metric came out identical -- through the command
only (quick profile, real MNIST).

The test compares the two trainings' summaries itself, then spoils the first run's recorded accuracy and
runs the command again: the repeat check must now report that run as differing, by exactly the spoiled amount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lossbench.summary import read_summary, write_json_atomic

from conftest import REPO


def reproduce(tmp_path, data_root) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "scripts" / "reproduce.py"), "mnist", "--profile", "quick",
               "--repeat-check", "1", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "report"),
               "--data-root", str(data_root), "--device", "cpu", "--jobs", "1"]
    return subprocess.run(command, cwd=tmp_path, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_repeat_check_reports_identical_metrics_and_catches_a_difference(mnist_root, tmp_path):
    result = reproduce(tmp_path, mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    check = json.loads((tmp_path / "report" / "results.json").read_text())["repeat_check"]
    keys = check["runs"]  # the first seed run's whole group of members (seeds trained together)
    assert 1 <= len(keys) <= 2
    for key in keys:
        first, again = read_summary(tmp_path / "runs" / key), read_summary(tmp_path / "runs" / "repeat-check" / key)
        assert again["run_dir"] != first["run_dir"] and again["status"] == first["status"] == "completed"
        assert first["metrics"]["test/acc"] > 0.2  # a real training (chance: 0.1), not an empty result
        assert again["metrics"] == first["metrics"]  # trained twice, the same numbers (CPU, deterministic)
    assert check["differing"] == []
    expected = f"{len(keys)} seed runs trained a second time: every test metric identical"
    assert check["text"] == expected
    assert f"- repeatability: {expected}" in (tmp_path / "report" / "report.md").read_text()

    first = read_summary(tmp_path / "runs" / keys[0])
    spoiled = {**first, "metrics": {**first["metrics"], "test/acc": first["metrics"]["test/acc"] - 0.25}}
    write_json_atomic(tmp_path / "runs" / keys[0] / "summary.json", spoiled)
    result = reproduce(tmp_path, mnist_root)  # the runs are kept; the repeat check trains its runs again
    assert result.returncode == 0, result.stderr[-3000:]
    check = json.loads((tmp_path / "report" / "results.json").read_text())["repeat_check"]
    [differing] = check["differing"]
    assert differing["run"] == keys[0] and differing["max_abs_diff"] == pytest.approx(0.25, abs=1e-9)
    assert check["text"] == f"{len(keys)} seed runs trained a second time: 1 differ (largest difference 0.25)"

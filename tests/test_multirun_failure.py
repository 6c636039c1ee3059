"""A sweep where one job crashes: the other jobs run to completion with intact summaries, the crashed
job's summary says ``failed`` with the error, its log keeps the traceback, and the command exits 1
with the traceback (a crash, unlike bad input, is not reduced to one line).

The crash is a real filesystem error, not a test hook: a file sits where the job's ``checkpoints``
folder must go, so Lightning cannot create it."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, TINY_SYNTHETIC, run_cli

NAME = "synthetic-sigmoid-bce_with_logits-seed{}"


@pytest.mark.slow
def test_one_failing_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    blocked = sweep / f"1_{NAME.format(1)}"
    blocked.mkdir(parents=True)
    (blocked / "checkpoints").write_text("not a folder")
    result = run_cli(["-m", *TINY_SYNTHETIC, *TINY, "seed=0,1,2", f"output_root={tmp_path}",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" in result.stderr and "FileExistsError" in result.stderr
    statuses = {}
    for seed in (0, 1, 2):
        summary = json.loads((sweep / f"{seed}_{NAME.format(seed)}" / "summary.json").read_text())
        statuses[seed] = summary["status"]
        assert summary["config"]["seed"] == seed
    assert statuses == {0: "completed", 1: "failed", 2: "completed"}  # job 2 ran after job 1 failed

    failed = json.loads((blocked / "summary.json").read_text())
    assert failed["error"].startswith("FileExistsError: ") and str(blocked / "checkpoints") in failed["error"]
    assert failed["metrics"] == {} and failed["versions"]["torch"]
    assert "Traceback" in (blocked / "train.log").read_text()
    for seed in (0, 2):
        done = json.loads((sweep / f"{seed}_{NAME.format(seed)}" / "summary.json").read_text())
        assert done["metrics"]["test/f1_macro"] is not None
        assert (sweep / f"{seed}_{NAME.format(seed)}" / "checkpoints" / "last.ckpt").is_file()

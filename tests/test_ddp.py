"""trainer=ddp through the CLI: two CPU processes (gloo), each on its half of the data; one summary."""

from __future__ import annotations

import math

import pytest

from lossbench.summary import read_summary

from conftest import TINY_SYNTHETIC, run_cli


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_summary(tmp_path):
    args = [f"output_root={tmp_path}", "data=synthetic", *TINY_SYNTHETIC, "data.batch_size=64", "trainer=ddp",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1", "trainer.progress_bar=none",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr and "distributed_backend=gloo" in result.stderr
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1  # rank 0 only
    summary = read_summary(summaries[0])
    assert summary["status"] == "completed"
    assert summary["config"]["trainer"]["strategy"] == "ddp"
    # 512 training samples, 2 processes, batches of 64: each process takes 4 steps (one process: 8)
    assert summary["global_step"] == 4
    assert summary["metrics"] and all(v is not None and math.isfinite(v) for v in summary["metrics"].values())

"""trainer=ddp through the CLI: two CPU processes (gloo), each on its half of the data; one summary, and
only rank 0 writes checkpoints and the summary.

Who writes what is observed, not inferred from the files: a ``sitecustomize`` on ``PYTHONPATH`` installs a
Python audit hook (``sys.addaudithook``) in every process of the run, the DDP process Lightning starts
included, and records each file it opens for writing and each rename (how checkpoints and summaries are
put in place) under the output folder, with the process's rank."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from lossbench.summary import read_summary

from conftest import TINY_SYNTHETIC, run_cli

AUDIT = '''
import os, sys
_root = os.environ.get("AUDIT_ROOT")
if _root:
    # Lightning starts rank 1 with LOCAL_RANK=1 in its environment; the launching process is rank 0
    _rank = os.environ.get("LOCAL_RANK", "0")
    _log = os.open(os.path.join(os.environ["AUDIT_LOG"], f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def _record(kind, path):
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(_root):
            os.write(_log, f"{_rank} {kind} {path}\\n".encode())

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & _writes):
                _record("write", args[0])
        elif event == "os.rename":
            _record("rename", args[1])

    sys.addaudithook(_hook)
'''


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_summary_and_only_rank_0_writes(tmp_path):
    site, audit = tmp_path / "site", tmp_path / "audit"
    site.mkdir()
    audit.mkdir()
    (site / "sitecustomize.py").write_text(AUDIT)
    root = tmp_path / "runs"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "AUDIT_ROOT": str(root), "AUDIT_LOG": str(audit)}
    args = [f"output_root={root}", "data=synthetic", *TINY_SYNTHETIC, "data.batch_size=64", "trainer=ddp",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1", "trainer.progress_bar=none",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    result = run_cli(args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr and "distributed_backend=gloo" in result.stderr
    summaries = list(root.rglob("summary.json"))
    assert len(summaries) == 1  # rank 0 only
    [run_dir] = [p.parent.parent for p in root.rglob(".hydra/config.yaml")]  # both ranks in one folder
    assert summaries[0].parent == run_dir
    summary = read_summary(summaries[0])
    assert summary["status"] == "completed"
    assert summary["config"]["trainer"]["strategy"] == "ddp"
    # 512 training samples, 2 processes, batches of 64: each process takes 4 steps (one process: 8)
    assert summary["global_step"] == 4
    assert summary["metrics"] and all(v is not None and math.isfinite(v) for v in summary["metrics"].values())

    records = [line.split(" ", 2) for log in audit.glob("*.log") for line in log.read_text().splitlines()]
    by_rank = {rank: {(kind, Path(path)) for r, kind, path in records if r == rank} for rank in ("0", "1")}
    assert {rank for rank, _, _ in records} == {"0", "1"}, "the audit hook did not run in both processes"
    checkpoint, summary_file = run_dir / "checkpoints" / "last.ckpt", run_dir / "summary.json"
    assert {("rename", checkpoint), ("rename", summary_file)} <= by_rank["0"]
    # rank 1 wrote nothing a run keeps (only its own log file, train_ddp_process_1.log)
    kept = [(kind, path) for kind, path in by_rank["1"] if not path.name.endswith(".log")]
    assert kept == [], kept

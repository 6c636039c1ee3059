"""Sweeps through ``hydra/launcher=slurm`` on a real Slurm cluster (``make test-slurm`` starts a local one with
scripts/slurm_local.sh): real sbatch jobs, real training. Without a reachable cluster every test here skips.

The jobs inherit this process's environment (sbatch exports it), so they train with this checkout's code."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossbench.resume import checkpoint_info

from conftest import TINY, TINY_SYNTHETIC, run_cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TIMEOUT = 600  # a sweep on a busy 2-core machine


def _slurm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def _no_cluster_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm cluster: sinfo is not on PATH (make test-slurm starts a local one)"
    result = _slurm("sinfo", "-h", "-o", "%t")
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"no Slurm cluster reachable ({first}); make test-slurm starts a local one"
    if not {"idle", "mix"} & set(result.stdout.split()):
        return f"the Slurm cluster has no idle node (sinfo: {' '.join(result.stdout.split())})"
    return None


@pytest.fixture(scope="module")
def node() -> dict[str, int]:
    """The cluster's biggest node (CPUs, memory in MB), as sinfo reports it."""
    reason = _no_cluster_reason()
    if reason:
        pytest.skip(reason)
    rows = [line.split() for line in _slurm("sinfo", "-h", "-N", "-o", "%c %m").stdout.splitlines()]
    return {"cpus": max(int(r[0]) for r in rows), "memory_mb": max(int(r[1].rstrip("+")) for r in rows)}


def slurm_args(name: str) -> list[str]:
    """A sweep on the cluster's default partition that fits a small node; ``name`` tells its jobs apart."""
    return ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10", "hydra.launcher.poll_s=0.5", f"hydra.launcher.name={name}"]


@pytest.fixture
def name(node) -> Iterator[str]:
    """The job name of the test's sweep; its jobs are cancelled after the test (one that failed midway)."""
    name = f"lbtest-{uuid.uuid4().hex[:8]}"
    yield name
    _slurm("scancel", "-n", name)


def jobs_named(name: str) -> list[str]:
    return _slurm("squeue", "-h", "-r", "-n", name, "-o", "%i").stdout.split()


def summaries(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in root.rglob("summary.json")}


def slurm_job_id(run_dir: Path) -> str:
    """The Slurm job a sweep job ran in (Hydra's job id, set by the launcher from the job's environment)."""
    match = re.search(r"^    id: '?(\d+(?:_\d+)?)'?$", (run_dir / ".hydra" / "hydra.yaml").read_text(), re.M)
    assert match, "the job's hydra.yaml names no Slurm job id"
    return match.group(1)


def test_a_two_job_sweep_runs_as_two_slurm_jobs_and_completes(name, tmp_path):
    result = run_cli([*slurm_args(name), "loss=bce_with_logits,cross_entropy", *TINY, *TINY_SYNTHETIC,
                      f"output_root={tmp_path}"], cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = summaries(tmp_path / "multirun")
    assert sorted(s["config"]["loss"]["name"] for s in found.values()) == ["bce_with_logits", "cross_entropy"]
    assert all(s["status"] == "completed" for s in found.values())
    assert all(s["metrics"] and all(math.isfinite(v) for v in s["metrics"].values()) for s in found.values())
    ids = {slurm_job_id(p.parent) for p in (tmp_path / "multirun").rglob("summary.json")}
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1  # two tasks of one sbatch array
    assert jobs_named(name) == []


@pytest.mark.parametrize("request_key", ["cpus", "gpus", "memory"])
def test_a_request_no_node_can_run_is_one_error_line_and_nothing_is_queued(node, name, tmp_path, request_key):
    args = slurm_args(name)
    if request_key == "cpus":
        args.append(f"hydra.launcher.cpus_per_task={node['cpus'] + 1}")
        expected = (f"error: hydra.launcher.cpus_per_task={node['cpus'] + 1}: ", f"at most {node['cpus']} CPUs")
    elif request_key == "gpus":  # the local cluster's node has no GPU
        args.append("hydra.launcher.gpus_per_node=1")
        expected = ("error: hydra.launcher.gpus_per_node=1: ", "no GPUs")
    else:
        too_much = node["memory_mb"] // 1024 + 1
        args.append(f"hydra.launcher.mem_gb={too_much}")
        expected = (f"error: hydra.launcher.mem_gb={too_much} ", f"at most {node['memory_mb']} MB")
    sweep = tmp_path / "sweep"
    result = run_cli([*args, "loss=bce_with_logits,cross_entropy", *TINY, *TINY_SYNTHETIC,
                      f"hydra.sweep.dir={sweep}", f"output_root={tmp_path}"], cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected[0]) and expected[1] in lines[0], result.stderr
    assert jobs_named(name) == []
    assert not (sweep / ".submitit").exists()  # nothing was submitted


@pytest.fixture
def node_down(node):
    """Every node of the cluster drained for the test (a node set down returns by itself once its slurmd
    answers the next ping), idle again after it."""
    nodes = _slurm("sinfo", "-h", "-N", "-o", "%N").stdout.split()
    for n in nodes:
        _slurm("scontrol", "update", f"nodename={n}", "state=drain", "reason=lossbench-test")
    try:
        yield nodes
    finally:
        for n in nodes:
            _slurm("scontrol", "update", f"nodename={n}", "state=resume")
        deadline = time.monotonic() + 60
        while _slurm("sinfo", "-h", "-o", "%t").stdout.split() != ["idle"] and time.monotonic() < deadline:
            time.sleep(0.5)


def test_a_job_that_can_never_start_is_cancelled_after_the_pending_timeout(node_down, name, tmp_path):
    started = time.monotonic()
    # a sweep that waits on forever fails here with TimeoutExpired
    result = run_cli([*slurm_args(name), "hydra.launcher.pending_timeout_s=3", "loss=bce_with_logits,cross_entropy",
                      *TINY, *TINY_SYNTHETIC, f"output_root={tmp_path}"], cwd=tmp_path, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: job "), result.stderr
    assert "has been pending" in lines[0] and "down or drained" in lines[0]
    assert "cancelled the sweep's 2 job(s)" in lines[0] and "pending_timeout_s=3" in lines[0]
    assert jobs_named(name) == []  # cancelled, not left queued
    assert time.monotonic() - started < 120


def test_a_cancelled_job_is_listed_with_the_command_that_reruns_only_it(name, tmp_path):
    args = [*slurm_args(name), "loss=bce_with_logits,cross_entropy", *TINY, *TINY_SYNTHETIC, f"output_root={tmp_path}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    sweep = subprocess.Popen([sys.executable, "-m", "lossbench.train", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (ids := jobs_named(name)) and time.monotonic() < deadline:
            time.sleep(0.2)
        [second] = [i for i in ids if i.endswith("_1")] or [f"{ids[0].split('_')[0]}_1"]
        _slurm("scancel", second)
        _, stderr = sweep.communicate(timeout=TIMEOUT)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert lines[0].startswith(f"job {second} CANCELLED") and "loss=cross_entropy" in lines[0], stderr
    assert lines[1].startswith("error: 1 of 2 jobs of the sweep did not finish"), stderr
    [command] = lines[2:]
    assert "loss=cross_entropy" in command and "bce_with_logits" not in command
    # the finished job's results are intact
    [done] = summaries(tmp_path / "multirun").values()
    assert (done["config"]["loss"]["name"], done["status"]) == ("bce_with_logits", "completed")

    # the printed command reruns the cancelled job, and only it
    program, *rest = shlex.split(command.strip())
    assert rest[:2] == ["-m", "lossbench.train"] and program == "python"
    rerun = run_cli(rest[2:], cwd=tmp_path, timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    found = sorted((s["config"]["loss"]["name"], s["status"]) for s in summaries(tmp_path / "multirun").values())
    assert found == [("bce_with_logits", "completed"), ("cross_entropy", "completed")]


def test_members_in_one_slurm_job_write_one_run_folder_each(name, tmp_path):
    result = run_cli([*slurm_args(name), "seeds=[0,1,2]", *TINY, *TINY_SYNTHETIC, f"output_root={tmp_path}"],
                     cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = list((tmp_path / "multirun").rglob("summary.json"))
    assert sorted(json.loads(p.read_text())["config"]["seed"] for p in found) == [0, 1, 2]
    assert all(json.loads(p.read_text())["status"] == "completed" for p in found)
    assert len({p.parent for p in found}) == 3
    # one sweep job, one Slurm job: the members share its folder
    [job_dir] = {p.parent.parent for p in found}
    assert slurm_job_id(job_dir).isdigit()  # a single job, no array
    assert len(list((tmp_path / "multirun").glob("*/.submitit/*/*_result.pkl"))) == 1


def test_a_requeued_job_continues_from_its_checkpoint_with_the_metrics_of_an_uninterrupted_run(name, tmp_path):
    # epochs long enough (a few seconds on a busy machine) to requeue the job between two checkpoints
    training = ["data.train_size=4096", "data.val_size=128", "data.test_size=128", "data.batch_size=32",
                "trainer.max_epochs=3", "trainer.progress_bar=none",
                "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    sweep = subprocess.Popen([sys.executable, "-m", "lossbench.train", *slurm_args(name), *training,
                              f"output_root={tmp_path / 'slurm'}"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (found := list((tmp_path / "slurm").rglob("checkpoints/last.ckpt"))):
            assert time.monotonic() < deadline and sweep.poll() is None, "no checkpoint was written"
            time.sleep(0.05)
        [job] = jobs_named(name)
        requeue = _slurm("scontrol", "requeue", job)
        assert requeue.returncode == 0, requeue.stderr
        interrupted_at = checkpoint_info(found[0])["epochs"]
        assert not list((tmp_path / "slurm").rglob("summary.json")), "the job finished before it was requeued"
        # Slurm holds a requeued job back for a while (BeginTime): let it start again at once
        while _slurm("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() not in ("PENDING", ""):
            time.sleep(0.2)
        _slurm("scontrol", "update", f"jobid={job}", "StartTime=now")
        _, stderr = sweep.communicate(timeout=TIMEOUT)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, stderr[-3000:]
    assert re.search(r"\bRestarts=1\b", _slurm("scontrol", "show", "job", job).stdout)  # Slurm did requeue it
    [summary] = summaries(tmp_path / "slurm").values()
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert summary["resumed_from"] == str(found[0])  # its own checkpoint, not a fresh start
    assert 1 <= interrupted_at < 3

    uninterrupted = run_cli([*training, "resume=false", f"output_root={tmp_path / 'local'}"], cwd=tmp_path,
                            timeout=TIMEOUT)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    [reference] = summaries(tmp_path / "local").values()
    assert summary["global_step"] == reference["global_step"]
    assert summary["metrics"] == reference["metrics"]  # exactly, not approximately


def test_ddp_with_two_slurm_tasks_writes_from_rank_0_only_and_matches_one_process(name, tmp_path):
    from test_ddp import AUDIT

    # srun starts both processes (Lightning's Slurm environment reads their ranks): the rank is SLURM_PROCID
    audit_source = AUDIT.replace('os.environ.get("LOCAL_RANK", "0")', 'os.environ.get("SLURM_PROCID", "0")')
    assert audit_source != AUDIT
    site, audit, root = tmp_path / "site", tmp_path / "audit", tmp_path / "slurm"
    site.mkdir()
    audit.mkdir()
    (site / "sitecustomize.py").write_text(audit_source)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "AUDIT_ROOT": str(root), "AUDIT_LOG": str(audit)}
    data = ["data=synthetic", *TINY_SYNTHETIC, "trainer.max_epochs=1", "trainer.progress_bar=none",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    result = run_cli([*slurm_args(name), "hydra.launcher.tasks_per_node=2", *data, "data.batch_size=64",
                      "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"output_root={root}"],
                     cwd=tmp_path, env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary_file] = root.rglob("summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "completed" and summary["config"]["trainer"]["strategy"] == "ddp"
    # 512 samples, 2 processes with batches of 64: 4 steps each
    assert summary["global_step"] == 4
    task_logs = "".join(p.read_text() for p in root.rglob(".submitit/*/*_log.err"))  # one per task
    assert "distributed_backend=gloo" in task_logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in task_logs

    records = [line.split(" ", 2) for log in audit.glob("*.log") for line in log.read_text().splitlines()]
    by_rank = {rank: {(kind, Path(path)) for r, kind, path in records if r == rank} for rank in ("0", "1")}
    assert {rank for rank, _, _ in records} == {"0", "1"}, "the audit hook did not run in both tasks"
    run_dir = summary_file.parent
    assert {("rename", run_dir / "checkpoints" / "last.ckpt"), ("rename", summary_file)} <= by_rank["0"]
    kept = [(kind, path) for kind, path in by_rank["1"]
            if path.name != "last.ckpt.lock" and not path.name.endswith(".log") and ".submitit" not in path.parts]
    assert kept == [], kept

    # one process with the two ranks' batches together takes the same steps
    single = run_cli([*data, "data.batch_size=128", "trainer.accelerator=cpu", "resume=false",
                      f"output_root={tmp_path / 'local'}"], cwd=tmp_path, timeout=TIMEOUT)
    assert single.returncode == 0, single.stderr[-3000:]
    [reference] = summaries(tmp_path / "local").values()
    assert reference["global_step"] == 4
    assert summary["metrics"].keys() == reference["metrics"].keys()
    for key, value in reference["metrics"].items():
        assert summary["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key

"""A full disk or a read-only output folder: one line naming the file and the error, exit code 1, no
summary claiming success, no file cut short, no lock left behind.

The disks are real: a 300 kB tmpfs (the first checkpoint, ~0.9 MB, does not fit) or a read-only tmpfs,
mounted in a private mount namespace of the command (``unshare --mount --map-root-user``) and gone when it
ends; what the run left is copied out first."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from lossbench.paths import CHECKPOINT

from conftest import TINY, TINY_SYNTHETIC

RUN_NAME = "synthetic-sigmoid-bce_with_logits-seed0"
# mount a tmpfs with options $1 on $2, run the rest, copy what the disk holds to $3, exit with the run's code
IN_NAMESPACE = 'mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; disk=$2; copy=$3; shift 3; "$@"; rc=$?; ' \
               'cp -a "$disk/." "$copy/"; exit $rc'


@pytest.fixture(scope="module")
def unshare():
    tool = shutil.which("unshare")
    probe = [tool, "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"] if tool else None
    if not probe or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare --mount --map-root-user)")
    return tool


def run_on_disk(unshare, tmp_path, mount_options: str, args: list[str]):
    disk, copy = tmp_path / "disk", tmp_path / "left"
    disk.mkdir()
    copy.mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "lossbench.train", f"output_root={disk / 'runs'}", *TINY_SYNTHETIC, *TINY,
               *args]
    result = subprocess.run([unshare, "--mount", "--map-root-user", "sh", "-c", IN_NAMESPACE, "sh", mount_options,
                             str(disk), str(copy), *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 99, result.stderr
    return result, disk, copy


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "Error executing job" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_file_with_nothing_half_written(unshare, tmp_path):
    result, disk, left = run_on_disk(unshare, tmp_path, "size=300k", [])
    assert result.returncode == 1, result.stderr[-3000:]
    [line] = error_lines(result.stderr)
    [run_dir] = (left / "runs" / RUN_NAME).iterdir()
    expected = disk / "runs" / RUN_NAME / run_dir.name / CHECKPOINT
    assert line == f"error: cannot write {expected}: No space left on device"
    summaries = list(left.rglob("summary.json"))
    for path in summaries:  # written only if a failure summary still fitted
        summary = json.loads(path.read_text())
        assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    files = [p for p in left.rglob("*") if p.is_file()]
    leftovers = [p for p in files if re.match(r"\.(last|summary|metrics|hparams|thresholds)\.", p.name)
                 or p.name.endswith(".lock")]
    assert leftovers == [], leftovers  # no temporary file, no lock
    assert not (run_dir / CHECKPOINT).exists()
    with open(run_dir / "metrics.csv", newline="") as f:  # what was logged before the disk filled, whole
        header, *rows = list(csv.reader(f))
    assert rows and all(len(row) == len(header) for row in rows)
    assert yaml.safe_load((run_dir / "hparams.yaml").read_text())["num_classes"] == 10


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line_naming_it(unshare, tmp_path):
    result, disk, left = run_on_disk(unshare, tmp_path, "ro", [])
    assert result.returncode == 1, result.stderr[-3000:]
    assert error_lines(result.stderr) == [f"error: cannot write {disk / 'runs'}: Read-only file system"]
    assert list(left.iterdir()) == []

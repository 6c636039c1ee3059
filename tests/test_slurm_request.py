"""The Slurm request checked against a partition before submitting (lossbench/slurm.py), on partitions described
as scontrol reports them: what the local test cluster cannot show (GPU nodes, typed gres, time and node limits).
No cluster needed; tests/test_slurm.py runs the same check against a real one."""

from __future__ import annotations

import pytest

from lossbench.errors import ConfigError
from lossbench.slurm import Node, Partition, check_request, minutes, parse_gres, rerun_command

CPU = Partition("cpu", max_time_min=60, max_nodes=None, max_cpus_per_node=None, max_mem_per_node_mb=None,
                nodes=[Node("c1", 8, 32000, {}), Node("c2", 16, 64000, {})])
GPU = Partition("gpu", max_time_min=None, max_nodes=2, max_cpus_per_node=None, max_mem_per_node_mb=None,
                nodes=[Node("g1", 32, 256000, parse_gres("gpu:a100:4(S:0-1)")),
                       Node("g2", 8, 64000, parse_gres("gpu:v100:2,shard:8"))])
CLUSTER = {"cpu": (CPU, True), "gpu": (GPU, False)}
FITS = {"partition": None, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 2, "mem_gb": 4, "timeout_min": 60}


def refused(**changes) -> str:
    with pytest.raises(ConfigError) as err:
        check_request({**FITS, **changes}, CLUSTER)
    return str(err.value)


def test_a_request_that_fits_goes_to_its_partition_or_the_default():
    assert check_request(FITS, CLUSTER) is CPU
    assert check_request({**FITS, "partition": "gpu", "gpus_per_node": 4, "cpus_per_task": 32}, CLUSTER) is GPU
    assert check_request({**FITS, "partition": "gpu", "gres": "gpu:v100:2"}, CLUSTER) is GPU
    assert check_request({**FITS, "cpus_per_task": 16, "mem_gb": 62}, CLUSTER) is CPU  # the bigger node


@pytest.mark.parametrize(("changes", "expected"), [
    ({"partition": "big"}, "hydra.launcher.partition='big' is not a partition of this cluster; partitions: cpu, gpu"),
    ({"timeout_min": 61}, "hydra.launcher.timeout_min=61: partition cpu allows at most 60 minutes a job"),
    ({"partition": "gpu", "nodes": 3}, "hydra.launcher.nodes=3: partition gpu allows at most 2 nodes a job"),
    ({"cpus_per_task": 17}, "hydra.launcher.cpus_per_task=17: the nodes of partition cpu have at most 16 CPUs"),
    ({"cpus_per_task": 9, "tasks_per_node": 2},
     "hydra.launcher.cpus_per_task=9 x tasks_per_node=2 = 18 CPUs a node: the nodes of partition cpu have at most 16"),
    ({"mem_gb": 63}, "hydra.launcher.mem_gb=63 (64512 MB): the nodes of partition cpu have at most 64000 MB (62 GB)"),
    ({"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1: the nodes of partition cpu have no GPUs; use 0 (or null)"),
    ({"partition": "gpu", "gpus_per_node": 5}, "hydra.launcher.gpus_per_node=5: the nodes of partition gpu have at most 4 GPUs"),
    ({"partition": "gpu", "gpus_per_task": 3, "tasks_per_node": 2},
     "hydra.launcher.gpus_per_task=3 x tasks_per_node=2: the nodes of partition gpu have at most 4 GPUs"),
    ({"partition": "gpu", "gres": "gpu:v100:3"}, "hydra.launcher.gres=gpu:v100:3: the nodes of partition gpu have at most 2 'gpu:v100' gres"),
    ({"partition": "gpu", "gres": "gpu:h100:1"}, "hydra.launcher.gres=gpu:h100:1: the nodes of partition gpu have no 'gpu:h100' gres"),
    # each alone fits some node, together none: shard only on g2 (8 CPUs), 16 CPUs only on g1 (no shard)
    ({"partition": "gpu", "gres": "shard:1", "cpus_per_task": 16},
     "hydra.launcher.nodes=1 of 16 CPUs, 4 GB, 1 shard each: 0 node(s) of partition gpu have all of it together"),
])
def test_a_request_no_node_can_run_names_the_key_the_value_and_the_limit(changes, expected):
    assert refused(**changes).startswith(expected)


def test_no_default_partition_asks_for_one():
    message = str(pytest.raises(ConfigError, check_request, FITS, {"cpu": (CPU, False)}).value)
    assert message == ("hydra.launcher.partition is not set and the cluster has no default partition; "
                       "set it to one of: cpu")


def test_slurm_times_and_gres_strings():
    assert minutes("UNLIMITED") is None
    assert minutes("1-02:03:00") == 1440 + 120 + 3
    assert minutes("00:30:00") == 30
    assert parse_gres("(null)") == {}
    assert parse_gres("gpu:a100:4(S:0-1),shard:8") == {"gpu": 4, "gpu:a100": 4, "shard": 8}


def test_the_rerun_command_is_one_sweep_when_the_missing_jobs_are_a_product():
    hydra = ["hydra/launcher=slurm", "hydra.launcher.partition=debug"]
    missing = [["loss=focal", "seed=1"], ["loss=focal", "seed=3"]]
    assert rerun_command(hydra, missing) == [
        "python -m lossbench.train -m hydra/launcher=slurm hydra.launcher.partition=debug loss=focal seed=1,3"]
    diagonal = [["loss=focal", "seed=1"], ["loss=bce_with_logits", "seed=2"]]  # their product has 4 jobs
    assert rerun_command(hydra, diagonal) == [
        "python -m lossbench.train -m hydra/launcher=slurm hydra.launcher.partition=debug loss=focal seed=1",
        "python -m lossbench.train -m hydra/launcher=slurm hydra.launcher.partition=debug loss=bce_with_logits seed=2"]
    assert rerun_command([], [["data.name=a b"]]) == ["python -m lossbench.train -m 'data.name=a b'"]

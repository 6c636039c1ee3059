"""Sweeps on a Slurm cluster: the launcher of ``hydra/launcher=slurm`` (configs/hydra/launcher/slurm.yaml).

hydra-submitit-launcher's Slurm launcher (one sbatch array task per job), plus:

- before anything is submitted, the request (partition, nodes, time limit, CPUs, memory, GPUs or other gres)
  is compared with the partition and its nodes as ``scontrol`` reports them; a request no node can ever
  satisfy is a ``ConfigError`` naming the key, the value asked and the limit;
- while the jobs wait, one pending for a reason that waiting does not clear (``PartitionConfig``, a node
  that is down, ...) for ``pending_timeout_s`` seconds cancels the sweep's jobs and ends it in one line;
- jobs that end without a result (cancelled, killed, out of time, node failure) are listed one per line
  with their state and overrides, followed by the command that reruns only those (``IncompleteSweep``);
  the finished jobs' run folders are left as they are.

Job states come from ``squeue`` and ``scontrol``, so the launcher needs no Slurm accounting (``sacct``).
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from lossbench.errors import ConfigError, IncompleteSweep

log = logging.getLogger("lossbench")

# pending reasons that no amount of waiting clears: the request exceeds what the partition allows, or the
# nodes it needs are down, drained or gone
UNRUNNABLE = {
    "PartitionConfig": "the request exceeds what the partition allows",
    "PartitionNodeLimit": "the partition has fewer nodes than requested",
    "PartitionTimeLimit": "the time limit exceeds the partition's",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "ReqNodeNotAvail": "a node the job needs is down, drained or reserved",
    "NodeDown": "a node the job needs is down",
    "BadConstraints": "no node has the requested features",
    "InvalidAccount": "the account is invalid",
    "InvalidQOS": "the QOS is invalid",
}
PREFIX = "hydra.launcher."


# --- what the cluster offers -----------------------------------------------------------------------------


def scontrol_records(kind: str) -> list[dict[str, str]]:
    """``scontrol show <kind> --oneliner`` as one dict per record (values with spaces kept whole)."""
    out = subprocess.run(["scontrol", "show", kind, "--oneliner"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    records = []
    for line in out.splitlines():
        record: dict[str, str] = {}
        key = None
        for token in line.split(" "):
            name, eq, value = token.partition("=")
            if eq and re.fullmatch(r"[A-Za-z_/:.]+", name):
                key, record[name] = name, value
            elif key is not None and token:
                record[key] += " " + token
        if record:
            records.append(record)
    return records


def minutes(slurm_time: str) -> float | None:
    """``scontrol``'s ``[days-]hours:minutes:seconds`` in minutes; None = unlimited."""
    if slurm_time.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days, _, clock = slurm_time.rpartition("-")
    h, m, s = ([0, 0, 0] + [int(p) for p in clock.split(":")])[-3:]
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def parse_gres(gres: str) -> dict[str, int]:
    """``gpu:a100:4(S:0-1),shard:8`` -> ``{"gpu": 4, "gpu:a100": 4, "shard": 8}``."""
    counts: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if not parts[0] or parts[0] == "(null)":
            continue
        count = int(parts[-1]) if parts[-1].isdigit() else 1
        names = parts[:-1] if parts[-1].isdigit() else parts
        for i in range(1, len(names) + 1):
            name = ":".join(names[:i])
            counts[name] = counts.get(name, 0) + count
    return counts


@dataclass
class Node:
    name: str
    cpus: int
    memory_mb: int
    gres: dict[str, int]


@dataclass
class Partition:
    name: str
    max_time_min: float | None
    max_nodes: int | None
    max_cpus_per_node: int | None
    max_mem_per_node_mb: int | None
    nodes: list[Node] = field(default_factory=list)


def _limit(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def read_partitions() -> dict[str, tuple[Partition, bool]]:
    """The cluster's partitions by name, each with whether it is the default."""
    nodes = scontrol_records("node")
    partitions = {}
    for r in scontrol_records("partition"):
        name = r["PartitionName"]
        members = [Node(n["NodeName"], int(n.get("CPUTot", 0)), int(n.get("RealMemory", 0)),
                        parse_gres(n.get("Gres", ""))) for n in nodes if name in n.get("Partitions", "").split(",")]
        partitions[name] = (Partition(name, minutes(r.get("MaxTime", "UNLIMITED")), _limit(r.get("MaxNodes")),
                                      _limit(r.get("MaxCPUsPerNode")), _limit(r.get("MaxMemPerNode")), members),
                            r.get("Default") == "YES")
    return partitions


# --- the request against the partition ------------------------------------------------------------------


def requested_gres(params: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """``{resource: (the key that asks for it, count a node)}``: GPUs and the generic resources of ``gres``."""
    tasks = params.get("tasks_per_node") or 1
    asked: dict[str, tuple[str, int]] = {}
    if params.get("gpus_per_node"):
        asked["gpu"] = (f"{PREFIX}gpus_per_node={params['gpus_per_node']}", params["gpus_per_node"])
    elif params.get("gpus_per_task"):
        asked["gpu"] = (f"{PREFIX}gpus_per_task={params['gpus_per_task']} x tasks_per_node={tasks}",
                        params["gpus_per_task"] * tasks)
    gres = params.get("gres") or ""
    for item in gres.split(","):  # gpu:2 or gpu:a100:2: the most specific name
        counts = parse_gres(item)
        if counts:
            name = max(counts, key=len)
            asked[name] = (f"{PREFIX}gres={gres}", counts[name])
    return asked


def check_request(params: dict[str, Any], partitions: dict[str, tuple[Partition, bool]]) -> Partition:
    """The partition the sweep goes to; a ``ConfigError`` naming the key, the value and the limit when
    no node of it can ever run one job of this request."""
    name = params.get("partition")
    if name is None:
        defaults = [p for p, is_default in partitions.values() if is_default]
        if not defaults:
            raise ConfigError(f"{PREFIX}partition is not set and the cluster has no default partition; "
                              f"set it to one of: {', '.join(partitions)}")
        partition = defaults[0]
    elif name not in partitions:
        raise ConfigError(f"{PREFIX}partition={name!r} is not a partition of this cluster; "
                          f"partitions: {', '.join(partitions)}")
    else:
        partition = partitions[name][0]
    where = f"partition {partition.name}"
    nodes_asked = params.get("nodes") or 1
    timeout = params.get("timeout_min")
    if timeout is not None and partition.max_time_min is not None and timeout > partition.max_time_min:
        raise ConfigError(f"{PREFIX}timeout_min={timeout}: {where} allows at most "
                          f"{partition.max_time_min:g} minutes a job")
    if partition.max_nodes is not None and nodes_asked > partition.max_nodes:
        raise ConfigError(f"{PREFIX}nodes={nodes_asked}: {where} allows at most {partition.max_nodes} nodes a job")

    tasks = params.get("tasks_per_node") or 1
    cpus = (params.get("cpus_per_task") or 1) * tasks
    cpus_said = f"{PREFIX}cpus_per_task={params.get('cpus_per_task') or 1}" + (
        f" x tasks_per_node={tasks} = {cpus} CPUs a node" if tasks > 1 else "")
    mem_gb = params.get("mem_gb")
    gres = requested_gres(params)
    # each key alone against the best node, then all of them together
    most_cpus = max((n.cpus for n in partition.nodes), default=0)
    if partition.max_cpus_per_node is not None:
        most_cpus = min(most_cpus, partition.max_cpus_per_node)
    if cpus > most_cpus:
        raise ConfigError(f"{cpus_said}: the nodes of {where} have at most {most_cpus} CPUs")
    most_mb = max((n.memory_mb for n in partition.nodes), default=0)
    if partition.max_mem_per_node_mb is not None:
        most_mb = min(most_mb, partition.max_mem_per_node_mb)
    if mem_gb is not None and mem_gb * 1024 > most_mb:
        raise ConfigError(f"{PREFIX}mem_gb={mem_gb} ({mem_gb * 1024} MB): the nodes of {where} have at most "
                          f"{most_mb} MB ({most_mb // 1024} GB)")
    for resource, (key, count) in gres.items():
        most = max((n.gres.get(resource, 0) for n in partition.nodes), default=0)
        if count > most:
            what = "GPUs" if resource == "gpu" else f"{resource!r} gres"
            offer = f"at most {most} {what}" if most else f"no {what}"
            hint = "; use 0 (or null) on a CPU-only partition" if resource == "gpu" and not most else ""
            raise ConfigError(f"{key}: the nodes of {where} have {offer}{hint}")
    fitting = [n for n in partition.nodes if n.cpus >= cpus and (mem_gb is None or n.memory_mb >= mem_gb * 1024)
               and all(n.gres.get(r, 0) >= c for r, (_, c) in gres.items())]
    if len(fitting) < nodes_asked:
        wanted = ", ".join([f"{cpus} CPUs", *([f"{mem_gb} GB"] if mem_gb else []),
                            *(f"{c} {r}" for r, (_, c) in gres.items())])
        raise ConfigError(f"{PREFIX}nodes={nodes_asked} of {wanted} each: {len(fitting)} node(s) of {where} "
                          f"have all of it together")
    return partition


# --- watching the jobs ----------------------------------------------------------------------------------


def queued(job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` of the jobs still in the queue (array tasks one by one); None when
    ``squeue`` could not answer this time."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:  # squeue refuses ids it no longer knows: then none of them is queued
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        job, state, reason = line.split("|", 2)
        states[job] = (state, reason)
    return states


def all_nodes_unavailable(partition: str) -> bool:
    """Every node of the partition is down, drained or failed (Slurm says "Nodes required for job are DOWN,
    DRAINED or reserved ...": reserved nodes free up, down ones do not)."""
    out = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = out.stdout.split()
    return out.returncode == 0 and bool(states) and all(
        s.endswith("*") or s.startswith(("down", "drain", "fail", "inval")) for s in states)


def final_state(job_id: str, last_seen: str | None) -> str:
    """The state Slurm gives a finished job (``scontrol`` keeps it for MinJobAge seconds). A job cancelled
    while pending leaves no record at all: the state it was last seen in then says what happened."""
    out = subprocess.run(["scontrol", "show", "job", job_id, "--oneliner"], capture_output=True, text=True,
                         timeout=30)
    match = re.search(r"\bJobState=(\S+)", out.stdout)
    if match:
        return match.group(1)
    return "CANCELLED (while pending)" if last_seen == "PENDING" else f"UNKNOWN (last seen {last_seen or 'never'})"


def unrunnable(reason: str, partition: str) -> str | None:
    """Why a job pending for ``reason`` can never start, or None when waiting may help."""
    if reason.startswith("Nodes required for job are DOWN") and all_nodes_unavailable(partition):
        return f"every node of partition {partition} is down or drained"
    return next((why for key, why in UNRUNNABLE.items() if reason.startswith(key)), None)


def program() -> str:
    import sys

    return "lossbench-train" if Path(sys.argv[0]).name == "lossbench-train" else "python -m lossbench.train"


def rerun_command(hydra_overrides: Sequence[str], missing: Sequence[Sequence[str]]) -> list[str]:
    """The commands that rerun only the ``missing`` jobs (each a list of task overrides): one sweep when they
    are exactly the product of their values, else one sweep per job."""
    keys: dict[str, list[str]] = {}
    for overrides in missing:
        for o in overrides:
            key, _, value = o.partition("=")
            values = keys.setdefault(key, [])
            if value not in values:
                values.append(value)
    size = 1
    for values in keys.values():
        size *= len(values)
    same_keys = all(len(o) == len(keys) for o in missing)
    head = [program(), "-m", *map(shlex.quote, hydra_overrides)]
    if same_keys and size == len(missing):
        return [" ".join([*head, *(shlex.quote(f"{k}={','.join(v)}") for k, v in keys.items())])]
    return [" ".join([*head, *map(shlex.quote, o)]) for o in missing]


class SlurmLauncher(SubmititSlurmLauncher):
    """``hydra/launcher=slurm``: submitit's Slurm launcher with the request checked before submitting, jobs
    that cannot start cancelled, and jobs without a result listed with the command that reruns them."""

    def __init__(self, pending_timeout_s: float = 300, poll_s: float = 2, **params: Any) -> None:
        super().__init__(**params)
        self.pending_timeout_s = pending_timeout_s
        self.poll_s = poll_s

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Any]) -> JobReturn:
        """One job, in each of its tasks on the cluster (as submitit's launcher does, but the DDP processes of
        one job share its folder: only rank 0 writes ``.hydra/``, so two never write one file at once)."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import run_job, setup_globals
        from omegaconf import open_dict

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        environment = submitit.JobEnvironment()
        with open_dict(sweep_config.hydra):
            sweep_config.hydra.job.id = environment.job_id
            sweep_config.hydra.job.num = job_num
            if environment.global_rank > 0:
                sweep_config.hydra.output_subdir = None
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                       job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """As submitit's launcher does (one array of jobs), but the request is checked first and the jobs are
        watched here, not by waiting on each result in turn."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides

        assert self.config is not None
        partition = self.check()
        own = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in own})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        self.wait(jobs, job_overrides, partition)
        return [job.results()[0] for job in jobs]

    def check(self) -> str:
        """Compare the request with the cluster (when ``scontrol`` can reach it); the partition's name."""
        if shutil.which("scontrol") is None:
            log.warning("scontrol is not on PATH: the Slurm request is not checked before submitting")
            return self.params.get("partition") or ""
        try:
            partitions = read_partitions()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            log.warning("cannot read the cluster's partitions (%s): the request is not checked", err)
            return self.params.get("partition") or ""
        partition = check_request(self.params, partitions)
        log.info("Slurm request fits partition %s", partition.name)
        return partition.name

    def wait(self, jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]], partition: str) -> None:
        """Until every job has left the queue; a job pending for a reason waiting does not clear for
        ``pending_timeout_s`` cancels all of them (``ConfigError``); jobs that left without a result
        end the sweep in ``IncompleteSweep``."""
        ids = [job.job_id for job in jobs]
        stuck_since: dict[str, float] = {}
        gone_once: set[str] = set()
        last_seen: dict[str, str] = {}  # each job's last state in the queue
        while True:
            states = queued(ids)
            if states is None:
                time.sleep(self.poll_s)
                continue
            now = time.monotonic()
            for job_id, (state, reason) in states.items():
                last_seen[job_id] = state
                why = unrunnable(reason, partition) if state == "PENDING" else None
                if why is None:
                    stuck_since.pop(job_id, None)
                    continue
                since = stuck_since.setdefault(job_id, now)
                if now - since >= self.pending_timeout_s:
                    self.cancel(ids)
                    raise ConfigError(
                        f"job {job_id} has been pending for {now - since:.0f} s with reason {reason} "
                        f"({why}), which waiting does not clear; cancelled the sweep's {len(ids)} job(s) "
                        f"(the wait is {PREFIX}pending_timeout_s={self.pending_timeout_s:g})")
            # a job counts as gone when two polls in a row miss it (requeued jobs pass through the queue)
            gone = {j for j in ids if j not in states and not any(s.startswith(j + "_") for s in states)}
            if gone >= set(ids) and gone_once >= set(ids):
                break
            gone_once = gone
            time.sleep(self.poll_s)
        missing = [(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)
                   if not job.paths.result_pickle.exists()]
        if missing:
            raise self.incomplete(missing, len(jobs), last_seen)

    def cancel(self, ids: Sequence[str]) -> None:
        subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], capture_output=True, timeout=30)

    def incomplete(self, missing: Sequence[tuple[Any, Sequence[str]]], total: int,
                   last_seen: dict[str, str]) -> IncompleteSweep:
        from hydra.core.utils import filter_overrides

        lines = [f"job {job.job_id} {final_state(job.job_id, last_seen.get(job.job_id))}: {' '.join(filter_overrides(overrides))} "
                 f"(log: {job.paths.stderr})" for job, overrides in missing]
        assert self.config is not None
        # -m stands for hydra.mode=MULTIRUN, which Hydra adds to the overrides
        hydra_overrides = [o for o in self.config.hydra.overrides.hydra if not o.startswith("hydra.mode=")]
        commands = rerun_command(hydra_overrides, [filter_overrides(o) for _, o in missing])
        lines.append(f"error: {len(missing)} of {total} jobs of the sweep did not finish (the others' results are "
                     f"in {self.config.hydra.sweep.dir}); to rerun only those (resume=auto continues each "
                     f"from its checkpoints/last.ckpt):")
        lines.extend(f"  {c}" for c in commands)
        return IncompleteSweep("\n".join(lines))

"""Vectorised seeds (``seeds=[...]``, lossbench/vectorised.py) vs separate runs, on one strategy of a profile.

``python scripts/check_vectorised_seeds.py mnist --profile cpu --model mlp`` trains claim 1's ``ce_same``
strategy on the profile's first dataset for every seed, once as separate runs (as ``scripts/reproduce.py``
trains them) and once as vectorised members, one torch thread each, in a temporary folder. Prints the CPU
seconds of both and every test metric that differs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lossbench.analysis.reproduce.jobs import Job, job_overrides, train_one
from lossbench.analysis.reproduce.protocol import load_protocol
from lossbench.summary import read_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=["mnist"])
    parser.add_argument("--profile", default="cpu", choices=["full", "cpu", "quick"])
    parser.add_argument("--strategy", default="ce_same", help="a strategy of the protocol with a fixed rate")
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    args = parser.parse_args(argv)
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.paths import CONFIG_DIR
    from lossbench.vectorised import train_members

    torch.set_num_threads(1)
    protocol = load_protocol(args.preset, profile=args.profile)
    strategy = protocol.strategies[args.strategy]
    dataset, model = next(iter(protocol.datasets)), args.model
    runs = Path(tempfile.mkdtemp(prefix="vectorised-check-"))
    jobs = [Job(dataset, model, strategy, float(strategy.lr), seed) for seed in protocol.seeds]
    separate_cpu = []
    for job in jobs:
        start = time.process_time()
        train_one(job_overrides(protocol, job, "cpu", None), str(runs / job.key), 1)
        separate_cpu.append(time.process_time() - start)
    overrides = [o for o in job_overrides(protocol, jobs[0], "cpu", None) if not o.startswith("seed=")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"seeds={protocol.seeds}"])
    out = runs / "vectorised"
    start = time.process_time()
    members = {s["config"]["seed"]: s["metrics"] for s in train_members(cfg, out)}
    vectorised_cpu = time.process_time() - start
    identical = 0
    for job in jobs:
        separate = read_summary(runs / job.key)["metrics"]
        differing = {k: (separate[k], members[job.seed].get(k)) for k in separate if separate[k] != members[job.seed].get(k)}
        identical += not differing
        print(f"seed {job.seed}: " + ("every test metric identical" if not differing else
              "; ".join(f"{k} {a:.9g} vs {b:.9g}" for k, (a, b) in differing.items())))
    shutil.rmtree(runs, ignore_errors=True)
    print(f"{dataset}/{model} {args.strategy}: {identical} of {len(jobs)} seeds identical in every test metric; "
          f"CPU seconds: {len(jobs)} separate runs {sum(separate_cpu):.1f} (the first includes lazy imports), "
          f"{len(jobs)} vectorised members {vectorised_cpu:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

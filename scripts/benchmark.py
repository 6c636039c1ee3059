"""lossbench performance, measured on whatever machine runs it (the GPU when there is one, else the CPU).

    python scripts/benchmark.py            (make bench)      python scripts/benchmark.py --help

Prints, and writes with the machine's description to docs/benchmarks.md:

1. training throughput (samples/s) of a lossbench run (train.py's data module, LightningModule, Trainer,
   loggers, callbacks, default settings) vs a bare PyTorch loop with the same model, data, batch order,
   batch size and optimizer, for the MLP and the CNN; ``--reps`` interleaved repetitions, fastest of each;
2. forward + backward time of every registered loss relative to ``bce_with_logits`` on the same logits;
3. peak memory of a training run (``python -m lossbench.train``, a child process; its peak RSS);
4. a sweep of losses x seeds: Hydra multirun (``-m seed=...,... loss=...,...``) vs one vectorised run
   (``seeds=[...] losses=[...]``), wall-clock, both as child processes; and the pure training-throughput
   gain of the vectorised members over the same number of sequential bare loops.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_DATA = Path(os.environ.get("LOSSBENCH_DATA") or REPO.parent / "shared" / "datasets")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding MNIST/raw/*.gz (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="interleaved paired repetitions (default: %(default)s)")
    p.add_argument("--mlp-batches", type=int, default=300, help="training batches per MLP measurement")
    p.add_argument("--cnn-batches", type=int, default=40, help="training batches per CNN measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, default=5, help="sweep: seeds per loss (default: %(default)s)")
    p.add_argument("--losses", default="bce_with_logits,bce_manual", help="sweep: losses sharing one head")
    p.add_argument("--sweep-epochs", type=int, default=2)
    p.add_argument("--sweep-train-size", type=int, default=None, help="sweep: training images (default: all)")
    p.add_argument("--members", type=int, default=10, help="members in the training-throughput comparison")
    p.add_argument("--member-batches", type=int, default=100, help="batches per member in that comparison")
    p.add_argument("--skip", default="", help="comma list of sections to skip: throughput,losses,memory,sweep")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    return p.parse_args()


# -- machine -------------------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    import lightning
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    info = {"cpu": f"{cpu}, {os.cpu_count()} logical cores, {mem_gib:.0f} GiB",
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "software": f"python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load average at start (1/5/15 min)": " / ".join(f"{v:.1f}" for v in os.getloadavg())}
    return info


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- configs -------------------------------------------------------------------------------------------

def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    from lossbench.paths import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def data_overrides(args) -> list[str]:
    return [f"data={args.data}", f"data.root={args.data_root}", f"data.batch_size={args.batch_size}"]


# -- 1. throughput: lossbench vs bare loop -------------------------------------------------------------

def lossbench_fit(cfg, dm, run_dir: Path) -> float:
    """Seconds a lossbench run spends in its training epoch (train.py's own builders)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lossbench.build import build_module, build_trainer
    from lossbench.loggers import build_loggers

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, module):
            sync()
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync()
            self.seconds = time.perf_counter() - self.start

    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, dm)
    timer = EpochTimer()
    trainer = build_trainer(cfg, run_dir, build_loggers(cfg, run_dir), [timer])
    trainer.fit(module, datamodule=dm)
    return timer.seconds


def bare_fit(cfg, dm, batches: int) -> float:
    """The same model, data order, batch size and optimizer in a plain PyTorch loop."""
    import torch
    import torch.nn.functional as F

    from lossbench.data.base import ShuffledBatches
    from lossbench.models import OPTIMIZERS, build_model

    dev = device()
    torch.manual_seed(cfg.seed)
    model_params = dict(cfg.model)
    net = build_model(model_params.pop("name"), dm.input_shape, dm.num_classes, **model_params).to(dev)
    opt_params = dict(cfg.optimizer)
    opt = OPTIMIZERS[opt_params.pop("name")](net.parameters(), **opt_params)
    data = dm.splits["train"]
    x_all, y_all = data.x.to(dev), data.y.to(dev)
    norm = dm.normalization
    mean = torch.tensor(norm.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, device=dev).view(1, -1, 1, 1)
    sampler = ShuffledBatches(len(data.y), dm.batch_size, shuffle=True, seed=cfg.seed)
    sync()
    start = time.perf_counter()
    for _, idx in zip(range(batches), sampler, strict=False):
        idx = idx.to(dev)
        x = (x_all[idx].float() / norm.scale - mean) / std
        loss = F.cross_entropy(net(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return time.perf_counter() - start


def throughput(args, tmp: Path) -> list[str]:
    from lossbench.build import build_datamodule

    rows = []
    for model, batches in (("mlp", args.mlp_batches), ("cnn", args.cnn_batches)):
        overrides = [*data_overrides(args), "loss=cross_entropy", f"model={model}", "trainer.max_epochs=1",
                     f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0"]
        cfgs = {"lossbench (defaults: rich bar, checkpoint, CSV)": compose(overrides),
                "lossbench, trainer.progress_bar=none": compose([*overrides, "trainer.progress_bar=none"])}
        quiet = cfgs["lossbench, trainer.progress_bar=none"]
        dm = build_datamodule(quiet)
        dm.setup("fit")
        bare: list[float] = []
        variants: dict[str, list[float]] = {name: [] for name in cfgs}
        ratios: dict[str, list[float]] = {name: [] for name in cfgs}
        lossbench_fit(quiet, dm, tmp / f"warmup-{model}")  # first-run costs (lazy imports, allocator) paid here
        for rep in range(args.reps):
            seconds_bare = bare_fit(quiet, dm, batches)
            bare.append(seconds_bare)
            for i, (name, cfg) in enumerate(cfgs.items()):
                seconds = lossbench_fit(cfg, dm, tmp / f"{model}-{rep}-{i}")
                variants[name].append(seconds)
                ratios[name].append(seconds_bare / seconds)
        samples = batches * args.batch_size
        rows.append(f"| {model} | bare PyTorch loop | {samples / min(bare):,.0f} | 1 | |")
        for name, seconds in variants.items():
            rows.append(f"| {model} | {name} | {samples / min(seconds):,.0f} | {min(bare) / min(seconds):.3f} | "
                        f"{median(ratios[name]):.3f} ({min(ratios[name]):.2f}-{max(ratios[name]):.2f}) |")
    return ["## 1. Training throughput: lossbench vs a bare PyTorch loop", "",
            f"{args.data}, batch {args.batch_size}, Adam 1e-3, cross-entropy; {args.mlp_batches} (MLP 784-256-256-10) / "
            f"{args.cnn_batches} (CNN 2 conv + 2 fc) training batches per measurement; training epoch only "
            f"(validation off); {args.reps} interleaved repetitions of (bare, lossbench, lossbench without bar). "
            "samples/s: the fastest repetition (the least disturbed by other processes, as `timeit` reports); "
            "ratio: lossbench / bare of those; per pair: the median (range) of the ratios within each repetition.", "",
            "| model | loop | samples/s | ratio to bare | per pair |", "|---|---|---:|---:|---:|", *rows, ""]


# -- 2. loss forward + backward ------------------------------------------------------------------------

def loss_timings(args) -> list[str]:
    import torch
    from torch.utils import benchmark as tbench

    from lossbench import losses
    from lossbench.targets import prepare

    dev = device()
    n, c = 1024, 10
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c + 1, generator=g).to(dev)
    target = (torch.rand(n, c, generator=g) < 0.2).float().to(dev)
    results = {}
    for name in losses.available():
        cls = losses.loss_class(name)
        criterion = losses.get_loss(name, head=cls.heads[0]).to(dev)
        raw = logits if cls.heads[0] == "partition" else logits[:, :c].contiguous()
        raw = raw.clone().requires_grad_()
        y = prepare(target, cls.target_form, c)
        timer = tbench.Timer("criterion(raw, y).backward()", globals={"criterion": criterion, "raw": raw, "y": y})
        results[name] = timer.blocked_autorange(min_run_time=0.3).median
    args.loss_seconds = results  # the member-throughput sentence states the sweep's losses' costs from these
    base = results["bce_with_logits"]
    rows = [f"| {name} | {seconds * 1e6:,.1f} | {seconds / base:.2f} |" for name, seconds in results.items()]
    return ["## 2. Loss forward + backward", "",
            f"Each registered loss with its natural head on the same logits ({n} x {c}, multi-label targets, "
            "mean reduction), `torch.utils.benchmark` median.", "",
            "| loss | µs per forward+backward | relative to bce_with_logits |", "|---|---:|---:|", *rows, ""]


# -- 3. peak memory -------------------------------------------------------------------------------------

def run_child(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB, Linux) and stderr tail of one child process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    log = cwd / "child.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed ({' '.join(cmd)}):\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss, log.read_text()[-2000:]


def memory(args, tmp: Path) -> list[str]:
    rows = []
    for model, batches in (("mlp", args.mlp_batches), ("cnn", args.cnn_batches)):
        cmd = [sys.executable, "-m", "lossbench.train", *data_overrides(args), "loss=cross_entropy", f"model={model}",
               "trainer.max_epochs=1", f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=10",
               "trainer.limit_test_batches=10", "trainer.progress_bar=none", f"output_root={tmp / 'memory'}"]
        _, peak_kib, _ = run_child(cmd, tmp)
        rows.append(f"| {model} | {peak_kib / 2**20:.2f} GiB |")
    lines = ["## 3. Peak memory of a training run", "",
             f"`python -m lossbench.train data={args.data} loss=cross_entropy model=<model> trainer.max_epochs=1 "
             f"trainer.limit_train_batches=<{args.mlp_batches} / {args.cnn_batches}>` (whole process, peak resident "
             "set size: interpreter, torch, Lightning, the decoded dataset).", "",
             "| model | peak RSS |", "|---|---:|", *rows, ""]
    if device().type == "cuda":
        lines[-1:-1] = [f"| {k} | {v} |" for k, v in gpu_memory(args, tmp).items()]
    return lines


def gpu_memory(args, tmp: Path) -> dict[str, str]:
    import torch

    from lossbench.build import build_datamodule

    out = {}
    for model, batches in (("mlp", args.mlp_batches), ("cnn", args.cnn_batches)):
        cfg = compose([*data_overrides(args), "loss=cross_entropy", f"model={model}", "trainer.max_epochs=1",
                       f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0",
                       "trainer.progress_bar=none"])
        dm = build_datamodule(cfg)
        dm.setup("fit")
        torch.cuda.reset_peak_memory_stats()
        lossbench_fit(cfg, dm, tmp / f"gpu-memory-{model}")
        out[f"{model}, GPU (max_memory_allocated)"] = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    return out


# -- 4. sweep: multirun vs vectorised -----------------------------------------------------------------

def sweep(args, tmp: Path) -> list[str]:
    from lossbench.summary import find_summaries, read_summary

    seeds = list(range(args.seeds))
    losses = args.losses.split(",")
    common = [*data_overrides(args), "model=mlp", f"trainer.max_epochs={args.sweep_epochs}"]
    if args.sweep_train_size:
        common.append(f"data.train_size={args.sweep_train_size}")
    multirun_cmd = [sys.executable, "-m", "lossbench.train", "-m", *common, f"seed={','.join(map(str, seeds))}",
                    f"loss={','.join(losses)}", f"output_root={tmp / 'multirun'}"]
    vector_cmd = [sys.executable, "-m", "lossbench.train", *common, f"seeds=[{','.join(map(str, seeds))}]",
                  f"losses=[{','.join(losses)}]", f"output_root={tmp / 'vectorised'}"]
    seq_s, _, _ = run_child(multirun_cmd, tmp)
    vec_s, _, _ = run_child(vector_cmd, tmp)
    separate = {s["config"]["run_name"]: s for s in map(read_summary, find_summaries([tmp / "multirun"]))}
    members = {s["config"]["run_name"]: s for s in map(read_summary, find_summaries([tmp / "vectorised"]))}
    runs = len(seeds) * len(losses)
    if len(separate) != runs or set(separate) != set(members):
        raise SystemExit(f"sweep: expected {runs} runs each way, got {sorted(separate)} vs {sorted(members)}")
    gap = max(abs(separate[k]["metrics"]["test/acc"] - members[k]["metrics"]["test/acc"]) for k in separate)
    gain = member_throughput(args, tmp)
    return ["## 4. Sweep: sequential runs vs one vectorised pass", "",
            f"{len(losses)} losses ({', '.join(losses)}) x {len(seeds)} seeds = {runs} runs, {args.data}, MLP, "
            f"{args.sweep_epochs} epochs{f', {args.sweep_train_size} training images' if args.sweep_train_size else ''}, "
            "default settings otherwise (validation every epoch, test, checkpoints); wall-clock of the whole "
            "command, process start-up and data loading included.", "",
            "| command | wall-clock | speed-up |", "|---|---:|---:|",
            f"| `python -m lossbench.train -m seed={','.join(map(str, seeds))} loss={','.join(losses)} ...` "
            f"(Hydra multirun, {runs} sequential jobs) | {seq_s:.1f} s | 1 |",
            f"| `python -m lossbench.train seeds=[{','.join(map(str, seeds))}] losses=[{','.join(losses)}] ...` "
            f"(one vectorised pass) | {vec_s:.1f} s | **{seq_s / vec_s:.2f}x** |", "",
            f"Largest test-accuracy difference between a member and its separate run: {gap:.4f} (float32).", "",
            *gain, ""]


def member_throughput(args, tmp: Path) -> list[str]:
    """Pure training: the vectorised loop over M members vs M sequential bare loops, same batches."""
    import torch

    from lossbench.build import build_datamodule
    from lossbench.vectorised import DTYPES, MemberStack, member_configs

    m, batches = args.members, args.member_batches
    losses = args.losses.split(",")
    cfg = compose([*data_overrides(args), "model=mlp", "loss=cross_entropy", "trainer.max_epochs=1",
                   f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0",
                   "trainer.progress_bar=none", f"seeds=[{','.join(map(str, range(m)))}]"])
    cfgs = member_configs(cfg)
    dm = build_datamodule(cfgs[0])
    dm.setup("fit")
    single = compose([*data_overrides(args), "model=mlp", "loss=cross_entropy", "trainer.max_epochs=1",
                      f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0"])
    vec, seq, runs = [], [], []
    for rep in range(max(3, args.reps // 2)):
        runs.append(lossbench_fit(single, dm, tmp / f"single-{rep}") * m)
        start = time.perf_counter()
        for member in cfgs:
            bare_fit(member, dm, batches)
        seq.append(time.perf_counter() - start)
        stack = MemberStack(cfgs, dm, device(), DTYPES["32-true"])
        sync()
        start = time.perf_counter()
        stack.fit()
        sync()
        vec.append(time.perf_counter() - start)
        del stack
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    samples = m * batches * args.batch_size
    return [f"Pure training throughput, {m} MLP members x {batches} batches (cross-entropy; {loss_costs(args, losses)}), "
            f"fastest of {len(vec)}:", "",
            "| loop | samples/s (all members) | gain |", "|---|---:|---:|",
            f"| {m} sequential lossbench runs (Lightning, defaults; one timed, times {m}) | "
            f"{samples / min(runs):,.0f} | {min(seq) / min(runs):.2f}x |",
            f"| {m} sequential bare PyTorch loops | {samples / min(seq):,.0f} | 1 |",
            f"| vectorised members (`lossbench.vectorised.MemberStack.fit`) | {samples / min(vec):,.0f} | "
            f"**{min(seq) / min(vec):.2f}x** (vs the lossbench runs: {min(runs) / min(vec):.2f}x) |"]


def loss_costs(args, losses: list[str]) -> str:
    """What the sweep's losses cost against cross-entropy, from section 2's timings (never assumed)."""
    seconds = getattr(args, "loss_seconds", None)
    if not seconds or "cross_entropy" not in seconds:
        return f"the sweep's losses {', '.join(losses)} were not timed against it in this run (section 2 skipped)"
    ratios = ", ".join(f"{name} {seconds[name] / seconds['cross_entropy']:.2f}x" for name in losses if name in seconds)
    return f"the sweep's losses' forward+backward relative to cross_entropy, section 2: {ratios}"


# -- main ----------------------------------------------------------------------------------------------

def main() -> None:
    args = parse_args()
    os.environ.setdefault("LOSSBENCH_DATA", str(args.data_root))
    from rich.console import Console
    from rich.markdown import Markdown

    from lossbench.engine import drop_nvml_cuda_check

    drop_nvml_cuda_check()  # as lossbench's entry point does, after lightning set PYTORCH_NVML_BASED_CUDA_CHECK
    console = Console()
    info = machine()
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    lines = ["# lossbench benchmarks", "",
             f"Generated by `python scripts/benchmark.py {' '.join(sys.argv[1:])}`".rstrip() + " (`make bench`).", "",
             *[f"- {k}: {v}" for k, v in info.items()],
             f"- device used: {device()}", ""]
    sections = {"throughput": throughput, "losses": lambda a, t: loss_timings(a), "memory": memory, "sweep": sweep}
    with tempfile.TemporaryDirectory(prefix="lossbench-bench-") as tmp:
        for name, section in sections.items():
            if name in skip:
                continue
            t0 = time.perf_counter()
            part = section(args, Path(tmp))
            console.print(Markdown("\n".join(part)))
            console.print(f"[dim]({name}: {time.perf_counter() - t0:.0f} s)[/dim]")
            lines += part
            write(args.out, lines)  # after every section: a cut-short run keeps what it measured
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    lines.append(f"Whole benchmark: {time.perf_counter() - started:.0f} s; load average at the end (1/5/15 min): {load} "
                 f"(other processes on the machine slow both sides of every comparison unevenly).")
    write(args.out, lines)
    console.print(f"written: {args.out}")


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

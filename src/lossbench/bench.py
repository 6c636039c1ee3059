"""lossbench performance on whatever machine runs it (the GPU when there is one, else the CPU), against targets.

    lossbench-bench            (make bench; python scripts/benchmark.py)            lossbench-bench --help

Prints, and writes with the machine's description and load average to ``docs/benchmarks.md`` (or ``--out``):

1. training throughput (samples/s) of a lossbench run (``lossbench.build``'s data module, LightningModule,
   Trainer, loggers and callbacks, default settings: progress bar, checkpoint, CSV) vs a bare PyTorch loop with
   the same model, data, batch order, batch size and optimizer, for the MLP and the CNN; ``--reps``
   interleaved, paired repetitions; the ratio of the fastest of each side, and the median of the per-pair ratios;
2. forward + backward time of every registered loss relative to ``bce_with_logits`` on the same logits;
3. peak memory of a training run (``python -m lossbench.train``, a child process; its peak RSS);
4. members: ``seeds=[0..M-1]`` in one command vs the Hydra multirun ``-m seed=0,..,M-1`` (whole commands,
   wall-clock), and the training throughput of M members vs M sequential bare loops.

Targets (issue "one engine"): single run / bare >= 0.90 (MLP) and >= 0.95 (CNN) on a CPU; 10 members >= 3x sooner
than the multirun on a CPU; 20 members >= 20x the training throughput of 20 sequential runs on a GPU. The report
says which are met. Run it on a quiet machine: other processes slow both sides of every comparison unevenly.
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

DEFAULT_DATA = Path(os.environ.get("LOSSBENCH_DATA") or Path.cwd().parent / "shared" / "datasets")
TARGETS = {"mlp": 0.90, "cnn": 0.95, "members_cpu": 3.0, "members_gpu": 20.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lossbench-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding MNIST/raw/*.gz (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="interleaved paired repetitions (default: %(default)s)")
    p.add_argument("--mlp-batches", type=int, default=300, help="training batches per MLP measurement")
    p.add_argument("--cnn-batches", type=int, default=40, help="training batches per CNN measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--members", type=int, default=None,
                   help="members in section 4 (default: 10 on a CPU, 20 on a GPU)")
    p.add_argument("--member-epochs", type=int, default=2, help="section 4: epochs of the whole commands")
    p.add_argument("--member-batches", type=int, default=100, help="section 4: batches per member, throughput part")
    p.add_argument("--skip", default="", help="comma list of sections to skip: throughput,losses,memory,members")
    p.add_argument("--out", type=Path, default=Path("docs") / "benchmarks.md")
    return p.parse_args(argv)


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
    return {"cpu": f"{cpu}, {os.cpu_count()} logical cores, {mem_gib:.0f} GiB",
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "software": f"python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load average at start (1/5/15 min)": load_average()}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- configs -------------------------------------------------------------------------------------------

def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.paths import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def data_overrides(args) -> list[str]:
    return [f"data={args.data}", f"data.root={args.data_root}", f"data.batch_size={args.batch_size}"]


# -- 1. throughput: lossbench vs bare loop -------------------------------------------------------------

def lossbench_fit(cfg, dm, run_dir: Path) -> float:
    """Seconds a lossbench run spends in its training epoch (lossbench.build's own builders)."""
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
    trainer = build_trainer(cfg, run_dir, build_loggers(cfg, run_dir), [timer], dm=dm)
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


def throughput(args, tmp: Path, results: dict) -> list[str]:
    from lossbench.build import build_datamodule

    rows = []
    for model, batches in (("mlp", args.mlp_batches), ("cnn", args.cnn_batches)):
        overrides = [*data_overrides(args), "loss=cross_entropy", f"model={model}", "trainer.max_epochs=1",
                     f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0"]
        cfgs = {"lossbench defaults (rich bar, checkpoint, CSV)": compose(overrides),
                "lossbench, trainer.progress_bar=none": compose([*overrides, "trainer.progress_bar=none"])}
        defaults = next(iter(cfgs))
        quiet = cfgs["lossbench, trainer.progress_bar=none"]
        dm = build_datamodule(quiet)
        dm.setup("fit")
        batches = min(batches, -(-len(dm.splits["train"].y) // dm.batch_size))
        bare: list[float] = []
        variants: dict[str, list[float]] = {name: [] for name in cfgs}
        ratios: dict[str, list[float]] = {name: [] for name in cfgs}
        lossbench_fit(quiet, dm, tmp / f"warmup-{model}")  # first-run costs (lazy imports, allocator) paid here
        bare_fit(quiet, dm, batches)
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
                        f"{statistics.median(ratios[name]):.3f} ({min(ratios[name]):.2f}-{max(ratios[name]):.2f}) |")
        results[model] = statistics.median(ratios[defaults])
    return ["## 1. Training throughput: lossbench vs a bare PyTorch loop", "",
            f"{args.data}, batch {args.batch_size}, Adam 1e-3, cross-entropy; {args.mlp_batches} (MLP 784-256-256-10) / "
            f"{args.cnn_batches} (CNN 2 conv + 2 fc) training batches per measurement (at most one epoch); training "
            f"epoch only (validation off); {args.reps} interleaved repetitions of (bare, lossbench, lossbench without "
            "bar). samples/s: the fastest repetition (the least disturbed by other processes, as `timeit` reports); "
            "ratio: lossbench / bare of those; per pair: the median (range) of the ratios within each repetition "
            "(the figure checked against the target).", "",
            "| model | loop | samples/s | ratio to bare | per pair |", "|---|---|---:|---:|---:|", *rows, ""]


# -- 2. loss forward + backward ------------------------------------------------------------------------

def loss_timings(args, tmp: Path, results: dict) -> list[str]:
    import torch
    from torch.utils import benchmark as tbench

    from lossbench import losses
    from lossbench.targets import prepare

    dev = device()
    n, c = 1024, 10
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c + 1, generator=g).to(dev)
    target = (torch.rand(n, c, generator=g) < 0.2).float().to(dev)
    timings = {}
    for name in losses.available():
        cls = losses.loss_class(name)
        criterion = losses.get_loss(name, head=cls.heads[0]).to(dev)
        raw = logits if cls.heads[0] == "partition" else logits[:, :c].contiguous()
        raw = raw.clone().requires_grad_()
        y = prepare(target, cls.target_form, c)
        timer = tbench.Timer("criterion(raw, y).backward()", globals={"criterion": criterion, "raw": raw, "y": y})
        timings[name] = timer.blocked_autorange(min_run_time=0.3).median
    base = timings["bce_with_logits"]
    rows = [f"| {name} | {seconds * 1e6:,.1f} | {seconds / base:.2f} |" for name, seconds in timings.items()]
    return ["## 2. Loss forward + backward", "",
            f"Each registered loss with its natural head on the same logits ({n} x {c}, multi-label targets, "
            "mean reduction), `torch.utils.benchmark` median.", "",
            "| loss | µs per forward+backward | relative to bce_with_logits |", "|---|---:|---:|", *rows, ""]


# -- 3. peak memory -------------------------------------------------------------------------------------

def run_child(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB, Linux) and output tail of one child process."""
    log = cwd / "child.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed ({' '.join(cmd)}):\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss, log.read_text()[-2000:]


def memory(args, tmp: Path, results: dict) -> list[str]:
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


# -- 4. members -----------------------------------------------------------------------------------------

def members(args, tmp: Path, results: dict) -> list[str]:
    """Whole commands (CPU target) and pure training throughput (GPU target) of members."""
    from lossbench.summary import find_summaries, read_summary

    gpu = device().type == "cuda"
    m = args.members or (20 if gpu else 10)
    seeds = ",".join(map(str, range(m)))
    common = [*data_overrides(args), "model=mlp", "loss=cross_entropy", f"trainer.max_epochs={args.member_epochs}"]
    multirun_cmd = [sys.executable, "-m", "lossbench.train", "-m", *common, f"seed={seeds}",
                    f"output_root={tmp / 'multirun'}"]
    members_cmd = [sys.executable, "-m", "lossbench.train", *common, f"seeds=[{seeds}]", f"output_root={tmp / 'members'}"]
    seq_s, _, _ = run_child(multirun_cmd, tmp)
    mem_s, _, _ = run_child(members_cmd, tmp)
    separate = {s["config"]["run_name"]: s for s in map(read_summary, find_summaries([tmp / "multirun"]))}
    stacked = {s["config"]["run_name"]: s for s in map(read_summary, find_summaries([tmp / "members"]))}
    if len(separate) != m or set(separate) != set(stacked):
        raise SystemExit(f"members: expected {m} runs each way, got {sorted(separate)} vs {sorted(stacked)}")
    gap = max(abs(separate[k]["metrics"]["test/acc"] - stacked[k]["metrics"]["test/acc"]) for k in separate)
    results["members_cpu" if not gpu else "members_command_gpu"] = seq_s / mem_s
    gain = member_throughput(args, tmp, m, results)
    return ["## 4. Members: M seeds in one pass", "",
            f"{m} seeds, {args.data}, MLP, cross-entropy, {args.member_epochs} epochs, default settings otherwise "
            "(validation every epoch, test, checkpoints, CSV); wall-clock of the whole command, process start-up "
            "and data loading included.", "",
            "| command | wall-clock | speed-up |", "|---|---:|---:|",
            f"| `python -m lossbench.train -m seed={seeds} ...` (Hydra multirun, {m} sequential jobs) | {seq_s:.1f} s | 1 |",
            f"| `python -m lossbench.train seeds=[{seeds}] ...` (members, one pass) | {mem_s:.1f} s | "
            f"**{seq_s / mem_s:.2f}x** |", "",
            f"Largest test-accuracy difference between a member and its separate run: {gap:.4f} (float32: members "
            "sum the same terms in another order).", "", *gain, ""]


def member_throughput(args, tmp: Path, m: int, results: dict) -> list[str]:
    """Training only: M members in one MemberModule fit vs M sequential lossbench runs and bare loops."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from lossbench.build import build_datamodule, build_trainer
    from lossbench.members import MemberModule, member_configs

    batches = args.member_batches
    base = [*data_overrides(args), "model=mlp", "loss=cross_entropy", "trainer.max_epochs=1",
            f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=0", "trainer.progress_bar=none",
            "trainer.checkpoint=false"]
    cfg = compose([*base, f"seeds=[{','.join(map(str, range(m)))}]"])
    cfgs = member_configs(cfg)
    dm = build_datamodule(cfgs[0])
    dm.setup("fit")
    single = compose(base)

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, module):
            sync()
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync()
            self.seconds = time.perf_counter() - self.start

    def members_fit() -> float:
        dm.member_seeds = [c.seed for c in cfgs]
        module, timer = MemberModule(cfgs, dm), EpochTimer()
        trainer = build_trainer(cfg, tmp / "member-throughput", [], [timer], dm=dm)
        trainer.fit(module, datamodule=dm)
        dm.member_seeds = None
        return timer.seconds

    L.seed_everything(0, verbose=False)
    members_fit()  # warm-up
    stacked, runs, bare = [], [], []
    for rep in range(max(3, args.reps // 2)):
        runs.append(lossbench_fit(single, dm, tmp / f"single-{rep}") * m)  # one timed, times M
        start = time.perf_counter()
        for member in cfgs:
            bare_fit(member, dm, batches)
        bare.append(time.perf_counter() - start)
        stacked.append(members_fit())
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    samples = m * batches * args.batch_size
    results["members_gpu" if device().type == "cuda" else "members_training_cpu"] = min(runs) / min(stacked)
    return [f"Training throughput only, {m} MLP members x {batches} batches, fastest of {len(stacked)}:", "",
            "| loop | samples/s (all members) | gain |", "|---|---:|---:|",
            f"| {m} sequential lossbench runs (one timed, times {m}) | {samples / min(runs):,.0f} | 1 |",
            f"| {m} sequential bare PyTorch loops | {samples / min(bare):,.0f} | {min(runs) / min(bare):.2f}x |",
            f"| members (`lossbench.members.MemberModule`, one Trainer.fit) | {samples / min(stacked):,.0f} | "
            f"**{min(runs) / min(stacked):.2f}x** |"]


# -- targets and main ------------------------------------------------------------------------------------

def targets_table(results: dict) -> list[str]:
    gpu = device().type == "cuda"
    rows = []
    checks = [("mlp", "single run / bare loop, MLP (median per-pair ratio)", TARGETS["mlp"], not gpu),
              ("cnn", "single run / bare loop, CNN (median per-pair ratio)", TARGETS["cnn"], not gpu),
              ("members_cpu", "10 members vs `-m seed=0..9`, whole commands (CPU)", TARGETS["members_cpu"], not gpu),
              ("members_gpu", "20 members vs 20 sequential runs, training throughput (GPU)", TARGETS["members_gpu"], gpu)]
    for key, what, target, applies in checks:
        if not applies:
            continue
        if key not in results:
            rows.append(f"| {what} | ≥ {target:g} | not measured | – |")
            continue
        value = results[key]
        verdict = "met" if value >= target else f"missed by {target - value:.2f} ({(1 - value / target) * 100:.0f} %)"
        rows.append(f"| {what} | ≥ {target:g} | {value:.2f} | {verdict} |")
    return ["## Targets", "", "| figure | target | measured | |", "|---|---:|---:|---|", *rows, ""]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("LOSSBENCH_DATA", str(args.data_root))
    from rich.console import Console
    from rich.markdown import Markdown

    from lossbench.engine import drop_nvml_cuda_check

    drop_nvml_cuda_check()  # as lossbench's entry point does, after lightning set PYTORCH_NVML_BASED_CUDA_CHECK
    console = Console()
    info = machine()
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    command = "lossbench-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# lossbench benchmarks", "", f"Generated by `{command.rstrip()}` (`make bench`).", "",
             *[f"- {k}: {v}" for k, v in info.items()], f"- device used: {device()}", ""]
    results: dict[str, float] = {}
    sections = {"throughput": throughput, "losses": loss_timings, "memory": memory, "members": members}
    body: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lossbench-bench-") as tmp:
        for name, section in sections.items():
            if name in skip:
                continue
            t0 = time.perf_counter()
            part = section(args, Path(tmp), results)
            console.print(Markdown("\n".join(part)))
            console.print(f"[dim]({name}: {time.perf_counter() - t0:.0f} s, load average {load_average()})[/dim]")
            body += part
            write(args.out, lines + targets_table(results) + body)  # a cut-short run keeps what it measured
    tail = [f"Whole benchmark: {time.perf_counter() - started:.0f} s; load average at the end (1/5/15 min): "
            f"{load_average()}. The figures at the end count the benchmark's own work (torch uses "
            f"{torch_threads()} threads here); other processes show in the load average at the start: one well "
            "above 0.5 there means they shared the cores, and the ratios are then not results."]
    write(args.out, lines + targets_table(results) + body + tail)
    console.print(Markdown("\n".join(targets_table(results))))
    console.print(f"written: {args.out}")


def write(path: Path, lines: list[str]) -> None:
    from lossbench.summary import write_atomic

    write_atomic(Path(path), lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()

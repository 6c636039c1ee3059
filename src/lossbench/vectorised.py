"""Vectorised multi-run training: several independent runs ("members") in one process, one pass over the data.

``python -m lossbench.train seeds=[0,1,2,3,4] losses=[bce_with_logits,bce_manual]`` trains one member per
(loss, seed) pair, each the run ``python -m lossbench.train seed=N loss=L`` would train:

* its model is built by ``train.build_module`` right after ``seed_everything(N)``, as ``train()`` does, so
  its initial weights are the separate run's; its batches come from its own ``ShuffledBatches`` (seed N),
  so its data order is the separate run's;
* the members' parameters are stacked (``torch.func.stack_module_state``) and the forward pass is
  ``vmap(functional_call(net, params_m, x_m))``. One step minimises ``sum_m loss_m``, whose gradient with
  respect to member m's parameters is that of ``loss_m`` alone; losses are the members' own criteria
  (``LossModule.compute_loss``), vmapped over the members that share one;
* one optimizer runs on the stacked tensors. Every optimizer lossbench offers (Adam, AdamW, SGD, RMSprop,
  Adadelta, Adagrad) updates each element from that element's gradient and state only, so the stacked
  step is the members' separate steps. ``gradient_clip_val`` clips each member by its own norm, as
  ``clip_grad_norm_`` does in the separate run;
* each member has its own torchmetrics objects and writes ``<run dir>/<data>-<head>-<loss>-seed<N>/`` with
  ``summary.json`` (same schema and values as a separate run), ``metrics.csv`` (and W&B, when asked: the
  curves are recorded on the device and replayed into each member's loggers after training),
  ``checkpoints/last.ckpt`` (loads with ``LossModule.load_from_checkpoint``) and ``.hydra/config.yaml``.
  A member whose loss turns non-finite is marked diverged; the others go on.

Not vectorised (one-line ``ConfigError``): dropout (members would draw masks unlike separate runs), several
devices or nodes, precisions other than 32-true / 64-true, resuming.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.func import functional_call, stack_module_state

from lossbench import losses as loss_registry
from lossbench.data.base import ShuffledBatches
from lossbench.errors import ConfigError
from lossbench.metrics import update_metrics
from lossbench.paths import CONFIG_DIR

DTYPES = {"32-true": torch.float32, "32": torch.float32, "64-true": torch.float64, "64": torch.float64}
# trainer.* keys the vectorised loop follows; any other key must be unset (null)
TRAINER_KEYS = ("accelerator", "devices", "max_epochs", "max_steps", "precision", "log_every_n_steps",
                "gradient_clip_val", "gradient_clip_algorithm", "limit_train_batches", "limit_val_batches",
                "limit_test_batches", "deterministic", "progress_bar", "checkpoint", "divergence_check_every")


# -- members' configurations ---------------------------------------------------------------------------

def loss_config(cfg: DictConfig, name: str) -> DictConfig:
    """The ``loss`` node of a run with ``loss=<name>``: the user's (with overrides) for ``cfg.loss.name``,
    else ``configs/loss/<name>.yaml``."""
    if name == cfg.loss.name:
        return cfg.loss
    if name not in loss_registry.available():
        raise ConfigError(f"losses: {name!r} is unknown; available: {', '.join(loss_registry.available())}")
    node = OmegaConf.load(CONFIG_DIR / "loss" / f"{name}.yaml")
    with open_dict(node):
        node.pop("defaults", None)
    return node


def member_configs(cfg: DictConfig) -> list[DictConfig]:
    """One config per (loss, seed), each equal to the config of the separate run ``seed=N loss=L``."""
    seeds = cfg.get("seeds")
    names = cfg.get("losses")
    seeds = [cfg.seed] if seeds is None else list(seeds)
    names = [cfg.loss.name] if names is None else list(names)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"losses={names} is invalid; allowed: a non-empty list of distinct loss names, "
                          f"from {', '.join(loss_registry.available())}")
    members = []
    for name in names:
        loss = loss_config(cfg, name)
        for seed in seeds:
            member = copy.deepcopy(cfg)
            with open_dict(member):
                member.seed, member.loss = seed, loss
                member.seeds, member.losses = None, None
            members.append(member)
    return members


def check_vectorisable(cfg: DictConfig) -> None:
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    extra = sorted(k for k, v in trainer.items() if k not in TRAINER_KEYS and v is not None)
    if extra:
        raise ConfigError(f"trainer.{extra[0]} is not supported with seeds=/losses= (vectorised members); "
                          f"supported trainer keys: {', '.join(TRAINER_KEYS)}")
    if str(trainer.get("precision", "32-true")) not in DTYPES:
        raise ConfigError(f"trainer.precision={trainer['precision']!r} is not supported with seeds=/losses=; "
                          "allowed: 32-true, 64-true")
    if trainer.get("devices", 1) not in (1, "1", "auto", None):
        raise ConfigError(f"trainer.devices={trainer['devices']!r} is not supported with seeds=/losses= "
                          "(members share one device); allowed: 1")
    if trainer.get("gradient_clip_algorithm") not in (None, "norm"):
        raise ConfigError(f"trainer.gradient_clip_algorithm={trainer['gradient_clip_algorithm']!r} is not "
                          "supported with seeds=/losses=; allowed: norm")
    if cfg.model.get("dropout"):
        raise ConfigError(f"model.dropout={cfg.model.dropout} is not supported with seeds=/losses= (members "
                          "would draw dropout masks unlike separate runs); allowed: 0")
    if cfg.get("resume") not in (None, False, "auto"):
        raise ConfigError(f"resume={cfg.resume!r} is not supported with seeds=/losses=; allowed: false")


def pick_device(accelerator: str | None) -> torch.device:
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA GPU is available; allowed here: cpu, auto")
        return torch.device("cuda")
    if accelerator in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"trainer.accelerator={accelerator!r} is not supported with seeds=/losses=; "
                      "allowed: auto, cpu, gpu")


def batch_limit(limit: int | float | None, available: int) -> int:
    """Lightning's ``limit_*_batches``: an int is a count, a float a fraction, null all."""
    if limit is None:
        return available
    if isinstance(limit, float):
        return int(available * limit)
    return min(int(limit), available)


# -- the stack -----------------------------------------------------------------------------------------

@dataclass
class Member:
    cfg: DictConfig
    module: Any  # lossbench.module.LossModule: head, criterion, metrics, normalisation; weights at the end
    sampler: ShuffledBatches
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, metrics) to log
    divergence: dict[str, float] | None = None
    epochs: int = 0
    global_step: int = 0

    @property
    def active(self) -> bool:
        return self.divergence is None


class MemberStack:
    """Members' stacked parameters, one optimizer, and the training / evaluation loops."""

    def __init__(self, cfgs: list[DictConfig], dm, device: torch.device, dtype: torch.dtype) -> None:
        import lightning as L

        from lossbench.build import build_module
        from lossbench.models import OPTIMIZERS

        self.dm, self.device, self.dtype = dm, device, dtype
        self.trainer_cfg = OmegaConf.to_container(cfgs[0].trainer, resolve=True)
        self.members: list[Member] = []
        for cfg in cfgs:
            L.seed_everything(cfg.seed, workers=True, verbose=False)  # as train() does, before build_module
            module = build_module(cfg, dm).to(device=device, dtype=dtype)
            sampler = ShuffledBatches(len(dm.splits["train"].y), dm.batch_size, shuffle=True, seed=cfg.seed)
            self.members.append(Member(cfg, module, sampler))
        first = self.members[0].module
        self.task, self.num_classes, self.normalize = first.task, first.num_classes, first.normalize
        self.params, self.buffers = stack_module_state([m.module.net for m in self.members])
        template = copy.deepcopy(first.net).to("meta")

        def net(params, buffers, x):
            return functional_call(template, (params, buffers), (x,))

        self.forward_each = torch.vmap(net)  # member m sees its own batch x[m]
        self.forward_shared = torch.vmap(net, in_dims=(0, 0, None))  # every member sees the same batch
        opt = OmegaConf.to_container(cfgs[0].optimizer, resolve=True)
        self.optimizer = OPTIMIZERS[opt.pop("name")](list(self.params.values()), **opt)
        # members sharing a loss config share one vmapped criterion call
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(self.members):
            groups.setdefault(OmegaConf.to_yaml(m.cfg.loss), []).append(i)
        self.loss_groups = [(torch.vmap(self.members[idx[0]].module.compute_loss),
                             torch.tensor(idx, device=device)) for idx in groups.values()]

    def __len__(self) -> int:
        return len(self.members)

    def member_losses(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(M,)`` each member's loss on its raw scores ``raw[m]`` and targets ``y[m]``."""
        if len(self.loss_groups) == 1:
            return self.loss_groups[0][0](raw, y)
        out = raw.new_empty(len(self))
        for loss_fn, idx in self.loss_groups:
            out = out.index_put((idx,), loss_fn(raw[idx], y[idx]))
        return out

    def clip_gradients(self, max_norm: float) -> None:
        """Each member's gradient scaled to norm <= max_norm, as ``torch.nn.utils.clip_grad_norm_``."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))

    # -- training ----------------------------------------------------------------------------------
    def fit(self, progress=None) -> None:
        t = self.trainer_cfg
        data = self.dm.splits["train"]
        x_all, y_all = data.x.to(self.device), data.y.to(self.device)
        per_epoch = batch_limit(t.get("limit_train_batches"), len(self.members[0].sampler))
        max_steps = t.get("max_steps") if t.get("max_steps") not in (None, -1) else None
        log_every = t.get("log_every_n_steps") or 50
        check_every = t.get("divergence_check_every") or (1 if self.device.type == "cpu" else 50)  # as LossModule
        clip = t.get("gradient_clip_val")
        first_bad_step = torch.full((len(self),), -1, device=self.device)
        first_bad_loss = torch.zeros(len(self), device=self.device, dtype=self.dtype)
        step = 0
        for epoch in range(t.get("max_epochs") or 1):
            epoch_sum = torch.zeros(len(self), device=self.device, dtype=self.dtype)
            seen = 0
            for m in self.members:
                m.sampler.set_epoch(epoch)
            for batch_idx, indices in enumerate(zip(*(m.sampler for m in self.members), strict=True)):
                if batch_idx >= per_epoch or (max_steps is not None and step >= max_steps):
                    break
                idx = torch.stack(indices).to(self.device, non_blocking=True)  # (M, B)
                x, y = x_all[idx], y_all[idx]
                losses = self.member_losses(self.forward_each(self.params, self.buffers, self.normalize(x)), y)
                self.optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                if clip:
                    self.clip_gradients(float(clip))
                self.optimizer.step()
                # bookkeeping stays on the device; the host looks every check_every / log_every steps
                detached = losses.detach()
                new_bad = ~torch.isfinite(detached) & (first_bad_step < 0)
                first_bad_step = torch.where(new_bad, step, first_bad_step)
                first_bad_loss = torch.where(new_bad, detached, first_bad_loss)
                epoch_sum += detached * idx.shape[1]
                seen += idx.shape[1]
                step += 1
                if step % log_every == 0:
                    self._record(step - 1, epoch, {"train/loss_step": detached})
                if step % check_every == 0:
                    self._check_divergence(first_bad_step, first_bad_loss, step, epoch)
                if progress is not None:
                    progress()
            self._check_divergence(first_bad_step, first_bad_loss, step, epoch)
            if seen:
                self._record(step - 1, epoch, {"train/loss_epoch": epoch_sum / seen})
            for m in self.members:
                if m.active:
                    m.epochs, m.global_step = epoch + 1, step
            if not any(m.active for m in self.members) or (max_steps is not None and step >= max_steps):
                break
            if batch_limit(t.get("limit_val_batches"), 1) != 0:
                for m, values in zip(self.members, self.evaluate("val", t.get("limit_val_batches")), strict=True):
                    if m.active:
                        m.history.append((step - 1, {**values, "epoch": epoch}))

    def _record(self, step: int, epoch: int, values: dict[str, torch.Tensor]) -> None:
        host = {k: v.tolist() for k, v in values.items()}  # one host sync for all members
        for i, m in enumerate(self.members):
            if m.active:
                m.history.append((step, {**{k: v[i] for k, v in host.items()}, "epoch": epoch}))

    def _check_divergence(self, first_bad_step, first_bad_loss, step: int, epoch: int) -> None:
        for i, (bad_step, bad_loss) in enumerate(zip(first_bad_step.tolist(), first_bad_loss.tolist(), strict=True)):
            m = self.members[i]
            if bad_step >= 0 and m.active:
                m.divergence = {"step": int(bad_step), "loss": float(bad_loss)}
                m.epochs, m.global_step = epoch + 1, step

    # -- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: str, limit: int | float | None) -> list[dict[str, float]]:
        """Per member: ``<split>/loss`` (mean over samples) and its torchmetrics for that split."""
        data = self.dm.splits[split]
        sampler = ShuffledBatches(len(data.y), self.dm.eval_batch_size, shuffle=False)
        batches = batch_limit(limit, len(sampler))
        metric_sets = [m.module.test_metrics if split == "test" else m.module.val_metrics for m in self.members]
        for metrics in metric_sets:
            for metric in metrics.values():
                metric.reset()
        loss_sum = torch.zeros(len(self), device=self.device, dtype=self.dtype)
        count = 0
        for _, idx in zip(range(batches), sampler, strict=False):
            x, y = data.x[idx].to(self.device), data.y[idx].to(self.device)
            raw = self.forward_shared(self.params, self.buffers, self.normalize(x))
            loss_sum += self.member_losses(raw, y.expand(len(self), *y.shape)) * len(y)
            count += len(y)
            for m, metrics, raw_m in zip(self.members, metric_sets, raw, strict=True):
                if m.active:
                    head = m.module.head
                    update_metrics(metrics, self.task, head.probabilities(raw_m, self.task),
                                   head.decide(raw_m, self.task), head.decide(raw_m, "multilabel"), y)
        losses = (loss_sum / max(count, 1)).tolist()
        results = []
        for m, metrics, loss in zip(self.members, metric_sets, losses, strict=True):
            values = {f"{split}/loss": loss}
            if m.active and count:
                values.update({f"{split}/{name}": float(metric.compute()) for name, metric in metrics.items()})
            results.append(values)
        return results

    def unstack(self) -> None:
        """Copy each member's trained slice back into its own LossModule."""
        for i, m in enumerate(self.members):
            m.module.net.load_state_dict({k: v[i].detach() for k, v in {**self.params, **self.buffers}.items()})

    def optimizer_state(self, i: int) -> dict[str, Any]:
        """Member i's slice of the optimizer state, indexed like the separate run's optimizer."""
        full = self.optimizer.state_dict()
        n = len(self)
        state = {k: {name: v[i].clone() if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v
                     for name, v in s.items()} for k, s in full["state"].items()}
        return {"state": state, "param_groups": full["param_groups"]}


# -- one command: train, test, write -------------------------------------------------------------------

def train_members(cfg: DictConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Train every (loss, seed) member of ``cfg`` together; return their summaries (each also written to
    ``run_dir/<member run_name>/summary.json``)."""
    import lightning as L

    from lossbench.build import build_datamodule
    from lossbench.config import validate
    from lossbench.decisions import evaluate_decision_rules
    from lossbench.summary import finite_or_none

    start = time.perf_counter()
    cfgs = member_configs(cfg)
    check_vectorisable(cfg)
    dm = build_datamodule(cfgs[0])
    for member in cfgs:
        try:
            validate(member, dm.task)
        except ConfigError as err:
            raise ConfigError(f"member seed={member.seed} loss={member.loss.name}: {err}") from None
    dm.setup("fit")
    device = pick_device(cfg.trainer.get("accelerator"))
    stack = MemberStack(cfgs, dm, device, DTYPES[str(cfg.trainer.get("precision", "32-true"))])
    with progress_bar(cfg.trainer.get("progress_bar", "rich"), stack) as advance:
        stack.fit(advance)
    limit_test = cfg.trainer.get("limit_test_batches")
    tests = stack.evaluate("test", limit_test)
    stack.unstack()
    eval_trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    summaries = []
    for i, m in enumerate(stack.members):
        member_dir = Path(run_dir) / m.cfg.run_name
        metrics: dict[str, Any] = {}
        if m.active:
            m.history.append((m.global_step, {**tests[i], "epoch": m.epochs}))
            metrics = {k: finite_or_none(v) for k, v in tests[i].items()}
            metrics.update(evaluate_decision_rules(m.cfg, eval_trainer, m.module, dm, member_dir))
        summaries.append(write_member(m, member_dir, metrics, stack.optimizer_state(i), dm.task,
                                      time.perf_counter() - start, noise=dm.noise_record))
    return summaries


def write_member(m: Member, member_dir: Path, metrics: dict, optimizer_state: dict, task: str,
                 wall_time_s: float, noise: dict | None = None) -> dict[str, Any]:
    """Everything a separate run leaves in its directory: logs, checkpoint, config, summary."""
    import lightning as L

    from lossbench.loggers import build_loggers, finish_loggers
    from lossbench.summary import run_summary, write_atomic, write_summary

    loggers = build_loggers(m.cfg, member_dir)  # first: Lightning's CSVLogger warns about a non-empty folder
    for logger in loggers:
        logger.log_hyperparams(m.module.hparams)
        for step, values in m.history:
            logger.log_metrics(values, step=step)
        logger.save()
    (member_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(m.cfg, member_dir / ".hydra" / "config.yaml")
    if m.cfg.trainer.get("checkpoint", True):
        checkpoint = {
            "epoch": max(m.epochs - 1, 0), "global_step": m.global_step,
            "pytorch-lightning_version": L.__version__,
            "state_dict": m.module.state_dict(), "hyper_parameters": dict(m.module.hparams),
            "optimizer_states": [optimizer_state], "lr_schedulers": [],
        }
        write_atomic(member_dir / "checkpoints" / "last.ckpt", lambda tmp: torch.save(checkpoint, tmp))
    summary = run_summary(m.cfg, task, metrics, m.epochs, m.global_step, wall_time_s, member_dir, m.divergence,
                          noise=noise)
    write_summary(member_dir, summary)
    for logger in loggers:
        logger.finalize("success")
    finish_loggers(loggers, summary)
    return summary


class progress_bar:  # noqa: N801 -- used as a context manager, like rich's own
    """A rich bar over all training steps, redrawn by rich's own thread: advancing it costs microseconds."""

    def __init__(self, kind: str, stack: MemberStack) -> None:
        self.kind, self.stack = kind, stack

    def __enter__(self):
        if self.kind == "none":
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn())
        t = self.stack.trainer_cfg
        per_epoch = batch_limit(t.get("limit_train_batches"), len(self.stack.members[0].sampler))
        total = per_epoch * (t.get("max_epochs") or 1)
        if t.get("max_steps") not in (None, -1):
            total = min(total, t["max_steps"])
        task = self.progress.add_task(f"{len(self.stack)} members", total=total)
        self.progress.start()
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self.kind != "none":
            self.progress.stop()

"""Members: several runs trained as one LightningModule, by the same Trainer, callbacks and checkpoints as a
single run.

``python -m lossbench.train seeds=[0,1,2,3,4] losses=[bce_with_logits,bce_manual]`` trains one member per
(loss, seed) pair, each the run ``python -m lossbench.train seed=N loss=L`` would train:

* its model is built by ``build.build_module`` right after ``seed_everything(N)``, as a single run's is, so its
  initial weights are the separate run's; its batches come from its own ``ShuffledBatches`` (seed N), so
  its data order is the separate run's;
* the members' parameters are stacked (``torch.func.stack_module_state``) into the parameters of one
  ``MemberModule``; the forward pass is ``vmap(functional_call(net, params_m, x_m))``. One step
  minimises ``sum_m loss_m``, whose gradient with respect to member m's parameters is that of ``loss_m``
  alone; the losses are the members' own criteria (``LossModule.compute_loss``), vmapped over the members
  that share one;
* one optimizer runs on the stacked tensors. Every optimizer lossbench offers (Adam, AdamW, SGD, RMSprop,
  Adadelta, Adagrad) updates each element from that element's gradient and state only, and a schedule sets
  the same rate for all, so the stacked step is the members' separate steps; gradient clipping by norm
  clips each member by its own norm, as ``clip_grad_norm_`` does in the separate run;
* ``lightning.Trainer.fit`` runs it, with the single run's callbacks: the epoch checkpoint of the stack
  (``<run dir>/checkpoints/last.ckpt``, so ``resume=auto`` continues an interrupted command), the progress bar,
  the precision plugin. Each member has its own torchmetrics; its curves are kept in memory (and in the
  stack's checkpoint) and written into its own run directory at the end;
* each member writes ``<run dir>/<data>-<head>-<loss>-seed<N>/`` as a separate run does: ``summary.json``,
  ``metrics.csv`` (and its own W&B run), ``checkpoints/last.ckpt`` (loads with
  ``LossModule.load_from_checkpoint`` and ``lossbench.predict``), ``thresholds.json``, ``.hydra/config.yaml``.
  A member whose loss turns non-finite is marked diverged and its weights stop changing; the others go on.

Not possible as members (one-line ``ConfigError``): layers whose training-mode forward differs between a
separate run and a vmapped stack (dropout draws other masks; batch norm updates running statistics in
place), several devices or nodes, the precisions ``16-true`` / ``bf16-true``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.func import functional_call, stack_module_state

from lossbench import losses as loss_registry
from lossbench.build import build_datamodule, build_module, build_trainer
from lossbench.config import validate
from lossbench.errors import ConfigError
from lossbench.metrics import metric_values, update_metrics
from lossbench.models import member_obstacles
from lossbench.module import LossModule, SteppedModule
from lossbench.paths import CHECKPOINT, CONFIG_DIR, HYDRA_CONFIG

PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed")


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


def check_members(cfg: DictConfig) -> None:
    """What members cannot do, each a one-line ``ConfigError`` naming the key and what is allowed."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    if str(trainer.get("precision", "32-true")) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={trainer['precision']!r} is not supported with seeds=/losses=; "
                          f"allowed: {', '.join(p for p in PRECISIONS if '-' in p)}")
    if trainer.get("devices", 1) not in (1, "1", "auto", None) or (trainer.get("num_nodes") or 1) != 1 \
            or str(trainer.get("strategy", "auto")).startswith(("ddp", "fsdp", "deepspeed")):
        raise ConfigError(f"trainer.devices={trainer.get('devices')!r} is not supported with seeds=/losses= (members "
                          "share one device, one process); allowed: trainer.devices=1 without a ddp strategy")
    if cfg.model.get("dropout"):
        raise ConfigError(f"model.dropout={cfg.model.dropout} is not supported with seeds=/losses= (members "
                          "would draw dropout masks unlike separate runs); allowed: 0")


def forward_mode(cfg: DictConfig, trainer) -> str:
    """``members_forward``: ``auto`` is ``loop`` on a CPU and ``vmap`` on an accelerator."""
    mode = cfg.get("members_forward") or "auto"
    if mode == "auto":
        return "loop" if trainer.strategy.root_device.type == "cpu" else "vmap"
    return mode


# -- the stack -----------------------------------------------------------------------------------------

class MemberModule(SteppedModule):
    """M members' stacked parameters, their criteria, heads and torchmetrics, as one LightningModule."""

    def __init__(self, cfgs: list[DictConfig], dm, forward_mode: str = "vmap") -> None:
        """``forward_mode``: ``vmap`` (one batched call for all members: the fast way on a GPU) or ``loop``
        (each member's forward on its own slice of the stack, one after another: on a CPU, where sequential
        GEMMs ran 10-20 % faster than the batched ones here). Both compute the same per-member operations."""
        super().__init__()
        first = cfgs[0]
        self.save_hyperparameters({
            "optimizer": OmegaConf.to_container(first.optimizer, resolve=True),
            "scheduler": OmegaConf.to_container(first.scheduler, resolve=True) if first.get("scheduler") else None,
            "divergence_check_every": first.trainer.get("divergence_check_every"),
            "gradient_clip_val": first.trainer.get("gradient_clip_val"),
            "gradient_clip_algorithm": first.trainer.get("gradient_clip_algorithm"),
            "members": [OmegaConf.to_container(c, resolve=True)["run_name"] for c in cfgs],
        })
        self.members = len(cfgs)
        self.cfgs = cfgs
        parts, nets = [], []
        for cfg in cfgs:
            L.seed_everything(cfg.seed, workers=True, verbose=False)  # as a single run does, before build_module
            module = build_module(cfg, dm)
            obstacles = member_obstacles(module.net)
            if obstacles:
                raise ConfigError(f"model={cfg.model.name} has {', '.join(obstacles[:3])}, which members cannot "
                                  "train like separate runs; allowed with seeds=/losses=: models without dropout "
                                  "or batch-norm running statistics (or run the seeds separately: -m seed=0,1,...)")
            nets.append(module.net)
            module.net = None  # the weights live in the stack below
            parts.append(module)
        self.parts = nn.ModuleList(parts)
        params, buffers = stack_module_state(nets)
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[name].detach().clone()) for name in self.param_names])
        for i, name in enumerate(self.buffer_names):  # constant buffers of a custom model, stacked alike
            self.register_buffer(f"stacked_buffer_{i}", buffers[name].detach().clone())
        template = copy.deepcopy(nets[0]).to("meta")
        object.__setattr__(self, "_template", template)  # not a submodule: it only lends its structure

        def net(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, weights, (x,))

        self._net = net
        self._vmap_each = torch.vmap(net)  # member m sees its own batch x[m]
        self._vmap_shared = torch.vmap(net, in_dims=(0, None))  # every member sees the same batch
        self.forward_mode = forward_mode
        groups: dict[str, list[int]] = {}
        for i, cfg in enumerate(cfgs):
            groups.setdefault(OmegaConf.to_yaml(cfg.loss), []).append(i)
        self._loss_groups = [(torch.vmap(self.parts[idx[0]].compute_loss), idx) for idx in groups.values()]
        self.register_buffer("active", torch.ones(len(cfgs), dtype=torch.bool), persistent=True)
        self.history: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in cfgs]  # (step, values) per member
        self.frozen: dict[int, list[torch.Tensor]] = {}  # diverged members' weights, put back after each step
        self.test_results: list[dict[str, float]] = [{} for _ in cfgs]
        self.task = parts[0].task

    # -- forward and losses ------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        weights = dict(zip(self.param_names, self.stacked, strict=True))
        for i, name in enumerate(self.buffer_names):
            weights[name] = getattr(self, f"stacked_buffer_{i}")
        return weights

    def forward_each(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, B, outputs)``: member m's raw scores on its own batch ``x[m]``."""
        if self.forward_mode == "vmap":
            return self._vmap_each(self.weights(), x)
        slices = {name: w.unbind(0) for name, w in self.weights().items()}  # one backward node per tensor
        return torch.stack([self._net({n: s[m] for n, s in slices.items()}, x[m]) for m in range(self.members)])

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, B, outputs)``: every member's raw scores on the same batch ``x``."""
        if self.forward_mode == "vmap":
            return self._vmap_shared(self.weights(), x)
        slices = {name: w.unbind(0) for name, w in self.weights().items()}
        return torch.stack([self._net({n: s[m] for n, s in slices.items()}, x) for m in range(self.members)])

    def member_losses(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(M,)`` each member's loss on its raw scores ``raw[m]`` and targets ``y[m]``."""
        if self.forward_mode == "loop":
            return torch.stack([self.parts[m].compute_loss(raw[m], y[m]) for m in range(self.members)])
        if len(self._loss_groups) == 1:
            return self._loss_groups[0][0](raw, y)
        out = raw.new_empty(self.members)
        for loss_fn, idx in self._loss_groups:
            index = torch.tensor(idx, device=raw.device)
            out = out.index_put((index,), loss_fn(raw[index], y[index]))
        return out

    # -- the step ------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch  # (M, B, ...), one batch per member
        raw = self.forward_each(self.parts[0].normalize(x))
        losses = self.member_losses(raw, y)
        # a diverged member adds nothing (its NaN gradient stays in its own slice of the stack)
        self.optimize(torch.where(self.active, losses, torch.zeros_like(losses)).sum())
        if self.frozen:
            with torch.no_grad():
                for m, saved in self.frozen.items():
                    for weight, value in zip(self.stacked, saved, strict=True):
                        weight[m] = value
        self.track(losses, y.shape[1])

    def clip(self, optimizer, value: float, algorithm: str) -> None:
        """Each member clipped by its own gradient norm (``clip_grad_norm_`` of a separate run)."""
        if algorithm == "value":
            super().clip(optimizer, value, algorithm)  # elementwise: the same for a stack and a single run
            return
        grads = [p.grad for p in self.stacked if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
        scale = (value / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))

    def on_divergence(self, divergences) -> None:
        with torch.no_grad():
            for d in divergences:
                self.active[d.member] = False
                self.frozen[d.member] = [w[d.member].detach().clone() for w in self.stacked]
        if not bool(self.active.any()):
            self.trainer.should_stop = True

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        # as a separate run: rows up to and including the first non-finite loss, none after it
        diverged = self.tracker.diverged
        for row in rows:
            for m, value in enumerate(row["train/loss_step"]):
                if m not in diverged or row["step"] <= diverged[m].step:
                    self.history[m].append((row["step"], {"train/loss_step": value, "epoch": self.current_epoch}))

    def log_epoch_loss(self, means: list[float]) -> None:
        for m, value in enumerate(means):
            if m not in self.tracker.diverged:
                self.history[m].append((self.global_step - 1, {"train/loss_epoch": value, "epoch": self.current_epoch}))

    def finish_tracking(self) -> None:
        if self.tracker is not None:
            self._after_flush(self.tracker.flush())

    # -- evaluation: every member on the same batches ------------------------------------------------------
    def _eval_step(self, batch, stage: str) -> None:
        x, y = batch
        raw = self.forward_shared(self.parts[0].normalize(x))
        losses = self.member_losses(raw, y.expand(self.members, *y.shape)).detach()
        self._loss_sum = getattr(self, "_loss_sum", 0) + losses * len(y)
        self._count = getattr(self, "_count", 0) + len(y)
        for m, part in enumerate(self.parts):
            if m not in self._inactive():
                head = part.head
                update_metrics(part.test_metrics if stage == "test" else part.val_metrics, self.task,
                               head.probabilities(raw[m], self.task), head.decide(raw[m], self.task),
                               head.decide(raw[m], "multilabel"), y)

    def _inactive(self) -> set[int]:
        return set(self.tracker.diverged) if self.tracker is not None else set()

    def _eval_end(self, stage: str) -> list[dict[str, float] | None]:
        losses = (self._loss_sum / max(self._count, 1)).float().tolist()
        self._loss_sum, self._count = 0, 0
        results: list[dict[str, float] | None] = []
        for m, part in enumerate(self.parts):
            metrics = part.test_metrics if stage == "test" else part.val_metrics
            if m in self._inactive():
                results.append(None)
            else:
                results.append({f"{stage}/loss": losses[m],
                                **{k: float(v) for k, v in metric_values(metrics, stage).items()}})
            for metric in metrics.values():
                metric.reset()
        return results

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        results = self._eval_end("val")
        if self.trainer.sanity_checking:
            return
        for m, values in enumerate(results):
            if values is not None:
                self.history[m].append((self.global_step - 1, {**values, "epoch": self.current_epoch}))

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.test_results = [values or {} for values in self._eval_end("test")]

    # -- checkpoints: curves, divergences and frozen weights travel with the stack ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lossbench_members"] = {"history": self.history, "frozen": self.frozen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lossbench_members") or {}
        self.history = state.get("history", self.history)
        self.frozen = state.get("frozen", {})
        self._reported = set(self.frozen)

    # -- one member as the LossModule a separate run would have ------------------------------------------
    def member_module(self, m: int, dm) -> LossModule:
        module = build_module(self.cfgs[m], dm)
        module.net.load_state_dict({name: w[m].detach().to(torch.float32 if w.dtype in (torch.float16, torch.bfloat16)
                                                               else w.dtype).cpu()
                                    for name, w in self.weights().items()})
        if self.stacked[0].dtype == torch.float64:
            module = module.double()
        return module

    def member_optimizer_state(self, m: int, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Member m's slice of the optimizer state, indexed like the separate run's optimizer."""
        full = optimizer.state_dict()
        state = {k: {name: v[m].clone() if torch.is_tensor(v) and v.ndim and v.shape[0] == self.members else v
                     for name, v in s.items()} for k, s in full["state"].items()}
        return {"state": state, "param_groups": full["param_groups"]}


# -- one command: train, test, write -------------------------------------------------------------------

def train_members(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None,
                  stack_checkpoint: bool = True) -> list[dict[str, Any]]:
    """Train every (loss, seed) member of ``cfg`` together; return their summaries (each also written to
    ``run_dir/<member run_name>/summary.json``). ``resume_from``: the stack's ``last.ckpt`` to continue.
    ``stack_checkpoint=False``: no epoch checkpoint of the stack in ``run_dir`` (for callers that share
    ``run_dir`` between concurrent stacks and never resume one); each member still writes its own."""
    from lossbench.decisions import evaluate_decision_rules
    from lossbench.engine import drop_nvml_cuda_check
    from lossbench.summary import finite_or_none

    drop_nvml_cuda_check()
    start = time.perf_counter()
    cfgs = member_configs(cfg)
    check_members(cfg)
    dm = build_datamodule(cfgs[0])
    for member in cfgs:
        try:
            validate(member, dm.task)
        except ConfigError as err:
            raise ConfigError(f"member seed={member.seed} loss={member.loss.name}: {err}") from None
    dm.setup("fit")
    dm.member_seeds = [c.seed for c in cfgs]
    stack_cfg = cfg
    if not stack_checkpoint:
        stack_cfg = copy.deepcopy(cfg)
        with open_dict(stack_cfg):
            stack_cfg.trainer.checkpoint = False
    trainer = build_trainer(stack_cfg, Path(run_dir), loggers=[], dm=dm)
    module = MemberModule(cfgs, dm, forward_mode(cfg, trainer))
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    module.finish_tracking()
    dm.member_seeds = None
    if not module.tracker.diverged or len(module.tracker.diverged) < module.members:
        trainer.test(module, datamodule=dm, verbose=False)
    base = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # the stack's loops, callbacks, ...
    optimizer = trainer.optimizers[0]
    summaries = []
    for m, member_cfg in enumerate(cfgs):
        member_dir = Path(run_dir) / member_cfg.run_name
        single = module.member_module(m, dm)
        divergence = module.tracker.diverged.get(m)
        metrics: dict[str, Any] = {}
        if divergence is None:
            # the test metrics go into the curves too, at the step and epoch Lightning logs them for a single run
            module.history[m].append((trainer.global_step, {**module.test_results[m], "epoch": trainer.current_epoch}))
            metrics = {k: finite_or_none(v) for k, v in module.test_results[m].items()}
            single.to(trainer.strategy.root_device)
            metrics.update(evaluate_decision_rules(member_cfg, trainer, single, dm, member_dir))
            single.cpu()
        steps = divergence.step + 1 if divergence else trainer.global_step
        # a separate run stops in the epoch of its first non-finite loss and counts that epoch as started
        epochs = divergence.step // max(1, trainer.num_training_batches) + 1 if divergence else trainer.current_epoch
        checkpoint = {**base, "state_dict": single.state_dict(), "hyper_parameters": dict(single.hparams),
                      "optimizer_states": [module.member_optimizer_state(m, optimizer)],
                      "lossbench_tracker": {"diverged": [(0, divergence.step, divergence.loss)] if divergence else []}}
        checkpoint.pop("lossbench_members", None)
        summaries.append(write_member(member_cfg, single, module.history[m], member_dir, metrics, checkpoint,
                                      dm.task, epochs, steps, time.perf_counter() - start,
                                      divergence.as_dict() if divergence else None, list(dm.classes),
                                      noise=dm.noise_record))
    return summaries


def write_member(cfg: DictConfig, module: LossModule, history: list, member_dir: Path, metrics: dict,
                 checkpoint: dict, task: str, epochs: int, global_step: int, wall_time_s: float,
                 divergence: dict | None, classes: list[str], noise: dict | None = None) -> dict[str, Any]:
    """Everything a separate run leaves in its directory: logs, checkpoint, config, summary."""
    from lossbench.loggers import build_loggers, finish_loggers
    from lossbench.resume import save_checkpoint_file
    from lossbench.summary import run_summary, write_atomic, write_summary

    member_dir.mkdir(parents=True, exist_ok=True)
    loggers = build_loggers(cfg, member_dir)  # first: Lightning's CSVLogger warns about a non-empty folder
    for logger in loggers:
        logger.log_hyperparams(module.hparams)
        for step, values in history:
            logger.log_metrics(values, step=step)
        logger.save()
    (member_dir / HYDRA_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, member_dir / HYDRA_CONFIG)
    if cfg.trainer.get("checkpoint", True):
        write_atomic(member_dir / CHECKPOINT, lambda tmp: save_checkpoint_file(checkpoint, tmp))
    summary = run_summary(cfg, task, metrics, epochs, global_step, wall_time_s, member_dir, divergence,
                          classes=classes, noise=noise)
    write_summary(member_dir, summary)
    for logger in loggers:
        logger.finalize("success")
    finish_loggers(loggers, summary)
    return summary

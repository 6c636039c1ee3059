"""Loggers of a run. CSV is always written (``<run dir>/metrics.csv``); ``logger=wandb`` adds Weights & Biases.

W&B mode (``logger.mode``): ``auto`` takes ``$WANDB_MODE`` when it is set, else ``online`` when an API key
is configured (``$WANDB_API_KEY``, ``$WANDB_IDENTITY_TOKEN_FILE`` or a netrc entry for the W&B host, as
``wandb login`` writes it), else ``offline``: the run is stored under ``<run dir>/wandb/`` and the
``wandb sync`` command that uploads it is printed when the run ends.
"""

from __future__ import annotations

import functools
import logging
import netrc
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from lossbench.errors import ConfigError
from lossbench.redaction import redact_secrets

LOGGERS = ("csv", "wandb")
WANDB_MODES = ("auto", "online", "offline", "disabled")
# what W&B itself accepts in $WANDB_MODE, mapped to the mode lossbench passes on
_WANDB_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                    "disabled": "disabled"}
log = logging.getLogger("lossbench")


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ConfigError(f"logger={name!r} is unknown; available: {', '.join(LOGGERS)}")
    # the run directory always holds Hydra's .hydra/ (and wandb/) already: the CSV logger's warning
    # that the folder "is not empty" says nothing about this run
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    loggers: list = [_csv_logger_class()(save_dir=str(run_dir), name="", version="")]
    if name == "wandb":
        loggers.append(build_wandb_logger(cfg, run_dir))
    return loggers


def finish_loggers(loggers: list, summary: dict[str, Any]) -> None:
    """Put the run's final summary into W&B and close the run (before the next sweep job starts)."""
    for logger in loggers:
        if hasattr(logger, "finish_run"):
            logger.finish_run(summary)


@functools.cache
def _csv_logger_class():
    """Lightning's ``CSVLogger`` writing ``metrics.csv`` and ``hparams.yaml`` whole to a temporary file and
    renaming it into place (``summary.write_atomic``): a kill or a full disk leaves the previous complete
    file, never one cut in the middle of a row (Lightning's writer appends in place)."""
    import csv

    from lightning.pytorch.core.saving import save_hparams_to_yaml
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from lightning.pytorch.loggers.logger import rank_zero_experiment

    from lossbench.summary import write_atomic

    class AtomicExperimentWriter(ExperimentWriter):
        def __init__(self, log_dir: str) -> None:
            super().__init__(log_dir)
            self.saved: list[dict[str, Any]] = []  # rows already in metrics.csv

        def save(self) -> None:
            if not self.metrics:
                return
            self._record_new_keys()
            rows = self.saved + self.metrics

            def write(tmp: Path) -> None:
                with open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(rows)

            write_atomic(Path(self.metrics_file_path), write)
            self.saved, self.metrics = rows, []

        def log_hparams(self, params: dict[str, Any]) -> None:
            self.hparams.update(params)
            write_atomic(Path(self.log_dir) / self.NAME_HPARAMS_FILE,
                         lambda tmp: save_hparams_to_yaml(tmp, self.hparams))

    class AtomicCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> AtomicExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AtomicExperimentWriter(log_dir=self.log_dir)
            return self._experiment

    return AtomicCSVLogger


# --- Weights & Biases ---------------------------------------------------------------------------------

def wandb_api_key_configured() -> bool:
    """True when wandb would find credentials: environment, or a netrc entry for ``$WANDB_BASE_URL``'s host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_wandb_mode(requested: str) -> str:
    """``online`` / ``offline`` / ``disabled`` for ``logger.mode`` (see the module docstring for ``auto``)."""
    if requested not in WANDB_MODES:
        raise ConfigError(f"logger.mode={requested!r} is invalid; allowed: {', '.join(WANDB_MODES)}")
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        if env_mode not in _WANDB_ENV_MODES:
            raise ConfigError(f"WANDB_MODE={env_mode!r} is invalid; allowed: {', '.join(_WANDB_ENV_MODES)}")
        return _WANDB_ENV_MODES[env_mode]
    return "online" if wandb_api_key_configured() else "offline"


def wandb_group(cfg: DictConfig) -> str | None:
    """``logger.group``, else the experiment preset's name, else ``sweep-<time>`` of a Hydra multirun or
    ``sweep-<id>`` of a run a W&B sweep agent started (``$WANDB_SWEEP_ID``), else none."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    experiment = hydra_cfg.runtime.choices.get("experiment") if hydra_cfg is not None else None
    if experiment:
        return str(experiment)
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        return f"sweep-{Path(hydra_cfg.sweep.dir).name}"
    if os.environ.get("WANDB_SWEEP_ID"):
        return f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    return None


def strategy_name(cfg: DictConfig) -> str:
    """The W&B ``job_type``: what a strategy is, head + loss."""
    return f"{cfg.head.name}+{cfg.loss.name}"


def build_wandb_logger(cfg: DictConfig, run_dir: Path):
    import wandb

    if wandb.run is not None:  # a job that crashed before finishing its run must not leak into this one
        log.warning("finishing W&B run %s left open by an earlier job", wandb.run.name)
        wandb.run.finish(exit_code=1)
    mode = resolve_wandb_mode(cfg.logger.get("mode", "auto"))
    tags = [cfg.data.name, cfg.head.name, cfg.loss.name, *cfg.logger.get("tags", [])]
    return _wandb_logger_class()(
        name=cfg.run_name, save_dir=str(run_dir), project=cfg.logger.project, entity=cfg.logger.get("entity"),
        group=wandb_group(cfg), job_type=strategy_name(cfg), tags=list(dict.fromkeys(tags)),
        config=redact_secrets(OmegaConf.to_container(cfg, resolve=True)), mode=mode,
        settings=wandb.Settings(quiet=True),  # no per-run history sparklines in a sweep's console
    )


@functools.cache
def _wandb_logger_class():
    """Lightning's ``WandbLogger`` that keeps the resolved config authoritative and closes its run."""
    from lightning.pytorch.loggers import WandbLogger  # imported here: lightning takes seconds to import

    class WandbRunLogger(WandbLogger):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            # Lightning always passes `anonymous`, which wandb 0.31 ignores with a warning
            self._wandb_init.pop("anonymous", None)
            if os.environ.get("WANDB_SWEEP_ID"):  # a W&B sweep's run: the sweep decides (else a warning each run)
                self._wandb_init.pop("project", None)
                self._wandb_init.pop("entity", None)

        def log_hyperparams(self, params) -> None:
            # the module's hyper-parameters add what the config lacks (task, num_classes, ...), never override it
            config = self.experiment.config
            super().log_hyperparams({k: v for k, v in dict(params).items() if k not in config})

        def finalize(self, status: str) -> None:
            super().finalize(status)
            if status == "failed" and self._experiment is not None:
                self._experiment.summary["status"] = "failed"
                self._experiment.finish(exit_code=1)
                self._experiment = None

        def finish_run(self, summary: dict[str, Any]) -> None:
            run = self._experiment
            if run is None:
                return
            final = {key: summary[key] for key in ("status", "task", "epochs", "global_step", "wall_time_s",
                                                   "divergence") if key in summary}
            run.summary.update({**final, **summary.get("metrics", {})})
            if summary.get("status") != "completed":
                run.tags = (*run.tags, summary["status"])
            offline = run.settings.mode in ("offline", "dryrun")
            sync_dir = run.settings.sync_dir
            run.finish(exit_code=0)
            self._experiment = None
            if offline:
                print(f"W&B run stored offline; upload it with:  wandb sync {sync_dir}")

    return WandbRunLogger

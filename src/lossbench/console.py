"""What a training run prints: the resolved config as a tree (``print_config=true``) and the results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossbench.redaction import redact_secrets

# the parts of a run first, in the order a run is built; every other key after them, as composed
TREE_ORDER = ("data", "noise", "model", "head", "loss", "optimizer", "scheduler", "trainer", "logger", "decision")


def config_tree(cfg: DictConfig):
    """A ``rich`` tree of the resolved config, secrets redacted: one branch per group, its keys as YAML."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    resolved = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    tree = Tree("config", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in resolved] + [k for k in resolved if k not in TREE_ORDER]
    for key in keys:
        value = resolved[key]
        if isinstance(value, dict) and value:
            tree.add(str(key), style="bold").add(Syntax(OmegaConf.to_yaml(value).rstrip(), "yaml",
                                                        background_color="default"))
        else:
            tree.add(f"{key}: {value}")
    return tree


def print_config_tree(cfg: DictConfig, console=None) -> None:
    from rich.console import Console

    (console or Console()).print(config_tree(cfg))


def print_results(summary: dict[str, Any], run_dir: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only
    from rich.console import Console
    from rich.table import Table

    if rank_zero_only.rank != 0:  # DDP: one table, from rank 0
        return
    console = Console()
    table = Table(title=f"{summary['config']['run_name']} -- {summary['status']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary["metrics"].items():
        table.add_row(name, "nan" if value is None else f"{value:.4f}")
    if summary["metrics"]:
        console.print(table)
    if summary.get("divergence"):
        console.print(f"{summary['config']['run_name']} -- diverged: non-finite training loss "
                      f"{summary['divergence']['loss']} at step {summary['divergence']['step']}; no test metrics")
    console.print(f"run directory: {run_dir}")

"""The whole comparison path on a real tiny sweep (2 losses x 2 seeds): one multirun command, the report
CLI, and notebooks/compare_losses.ipynb executed by a real Jupyter kernel."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, TINY, TINY_SYNTHETIC, run_cli

NOTEBOOK = REPO / "notebooks" / "compare_losses.ipynb"
STRATEGIES = ("sigmoid+bce_with_logits", "softmax+cross_entropy")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    result = run_cli(["-m", f"output_root={root}", "loss=bce_with_logits,cross_entropy", "seed=0,1",
                      *TINY_SYNTHETIC, *TINY, "trainer.max_epochs=2"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = list((root / "multirun").iterdir())
    assert len(list(sweep.glob("*/summary.json"))) == 4
    return sweep


@pytest.mark.slow
def test_report_cli_prints_the_table_and_writes_files(tiny_sweep):
    result = subprocess.run([sys.executable, "-m", "lossbench.report", str(tiny_sweep)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if any(s in line for s in STRATEGIES)]
    assert len(rows) == 2
    for row in rows:  # 2 completed runs, 0 diverged, 0 failed, then mean ± std cells
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[1:4] == ["2", "0", "0"] and all("±" in c for c in cells[4:]), row
    out = tiny_sweep / "report"
    assert {p.name for p in out.iterdir()} == {"report.md", "report.csv", "report.json", "final_multilabel.png",
                                              "curves_multilabel.png", "reliability_multilabel.png"}


@pytest.mark.slow
def test_notebook_executes_on_the_sweep(tiny_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_SWEEP", str(tiny_sweep))  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = "\n".join(o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    for strategy in STRATEGIES:
        assert f"| {strategy} | 2 | 0 | 0 |" in markdown  # the table
        assert f"| {strategy} | 1 | completed |" in markdown  # the per-seed values
    # the one pair over its 2 shared seeds: Holm over 1, and 2 seeds can never give a verdict
    assert "Family: Holm over the 1 comparison(s) of this table" in markdown
    assert f"| {STRATEGIES[0]} | {STRATEGIES[1]} | test/f1_macro | 2 pairs |" in markdown
    assert "**no significant difference at n=2** | none (rank test cannot reach α/m) |" in markdown
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # final metrics, validation curves, paired differences, reliability

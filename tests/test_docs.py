"""The documentation: the site builds strictly and shows the generated parts, the adding-a-loss page is
followed literally in a copy of the repository, the configuration reference covers the config tree, and the
README stays short with every number it quotes in a committed file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lossbench import docs_gen, losses
from lossbench.paths import CONFIG_DIR

from conftest import REPO, TINY, TINY_SYNTHETIC

README = REPO / "README.md"
EXTENDING = REPO / "docs" / "extending.md"
# references that mean nothing outside this repository's tracker, and machines described by who else used them
TRACKER_REFERENCE = re.compile(r"seeds/\d{3}|\bissues? \d+|\(issue [0-9N]+\)|other engineers|other people's",
                               re.IGNORECASE)
# a Sphinx cross-reference role, which mkdocstrings prints as text (":class: LossTracker" once tags are gone)
REST_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):\s+\w")


def _build_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "NO_MKDOCS_2_WARNING": "1"}


# -- the site --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_site_builds_strictly_with_the_generated_tables(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, env=_build_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    losses_page = (site / "losses" / "index.html").read_text()
    for name in losses.available():  # one generated section per registered loss
        assert f'id="{name}"' in losses_page, name
    config_page = (site / "configuration" / "index.html").read_text()
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        if group != ".":
            assert f"{group}={path.stem}" in config_page, path
    api_page = (site / "api" / "losses" / "index.html").read_text()
    for name in losses.available():
        assert f'id="{losses.loss_class(name).__module__}"' in api_page, name
    for page in site.rglob("*.html"):
        text = re.sub(r"<[^>]+>", " ", page.read_text())
        assert not TRACKER_REFERENCE.search(text), (page, TRACKER_REFERENCE.search(text))
        assert not REST_ROLE.search(text), (page, REST_ROLE.search(text))


# -- the adding-a-loss page, followed literally ----------------------------------------------------------------
BLOCK = re.compile(r'^```\w*\s+title="(?P<title>[^"]+)"\n(?P<body>.*?)^```$', re.MULTILINE | re.DOTALL)
EDIT = re.compile(r"^(?P<path>\S+) \((?P<where>above|in) (?P<name>\w+)\)$")


def _section(page: Path, heading: str) -> str:
    text = page.read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _apply(step_title: str, body: str, root: Path) -> Path:
    """A titled code block of the page: ``path`` is a new file; ``path (above NAME)`` goes before the line
    ``NAME = ...`` of that file, ``path (in NAME)`` right after it (the first entry of that dict or list)."""
    edit = EDIT.match(step_title)
    if edit is None:
        target = root / step_title
        assert not target.exists(), f"the page's new file {step_title} exists already: pick another example"
        target.write_text(body)
        return Path(step_title)
    target = root / edit["path"]
    lines = target.read_text().splitlines(keepends=True)
    anchor = next((i for i, line in enumerate(lines) if line.startswith(f"{edit['name']} = ")), None)
    assert anchor is not None, f"{edit['path']} has no line '{edit['name']} = ...' for the step {step_title!r}"
    at = anchor if edit["where"] == "above" else anchor + 1
    block = body if edit["where"] == "in" else body + "\n\n"
    lines[at:at] = [block]
    target.write_text("".join(lines))
    return Path(edit["path"])


@pytest.mark.slow
def test_the_adding_a_loss_page_followed_in_a_copy_gives_a_tested_trainable_loss(tmp_path):
    section = _section(EXTENDING, "## Adding a loss")
    steps = [(m["title"], m["body"]) for m in BLOCK.finditer(section)]
    listed = set(re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE))
    new_modules = [Path(t) for t, _ in steps if t.startswith("src/lossbench/losses/") and t.endswith(".py")]
    assert len(new_modules) == 1, "the page adds one loss module"
    name = new_modules[0].stem
    assert name not in losses.available(), f"{name} is a real loss now: give the page another example"

    copy = tmp_path / "repo"
    for part in ("src", "configs"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "tests").mkdir()
    for part in ("tests/conftest.py", "tests/test_losses.py", "pyproject.toml"):
        shutil.copy2(REPO / part, copy / part)
    touched = {_apply(title, body, copy).as_posix() for title, body in steps}
    assert touched == listed, f"the page's table lists {sorted(listed)}; its steps touch {sorted(touched)}"

    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "CUDA_VISIBLE_DEVICES": ""}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-x",
                            "tests/test_losses.py", "-k", f"{name} or every_registered or every_loss_has"],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-4000:]
    passed = [line for line in tests.stdout.splitlines() if "PASSED" in line]
    for test in ("test_loss_matches_float64_reference", "test_gradcheck_float64",
                 "test_config_file_matches_constructor_and_natural_head"):
        assert any(test in line and name in line for line in passed), f"{test} did not run for {name}"
    assert any("test_every_registered_loss_has_a_float64_reference_case" in line for line in passed)

    run = subprocess.run([sys.executable, "-m", "lossbench.train", f"loss={name}", "output_root=runs",
                          *TINY, *TINY_SYNTHETIC], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (summary_path,) = (copy / "runs").rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["loss"]["name"] == name and summary["config"]["head"]["name"] == "sigmoid"


# -- the configuration reference -------------------------------------------------------------------------------
def _yaml_keys(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _yaml_keys(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def test_configuration_reference_has_every_option_and_key_of_the_config_tree():
    page = docs_gen.config_reference_markdown(CONFIG_DIR)
    sections = re.split(r"^### ", page, flags=re.MULTILINE)
    by_option = {s.split("\n", 1)[0].strip("`"): s for s in sections[1:]}
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        raw = yaml.safe_load(path.read_text()) or {}
        raw.pop("defaults", None)
        if group == ".":
            section, skip = sections[0], ("hydra.",)
        else:
            assert f"{group}={path.stem}" in by_option, path
            section, skip = by_option[f"{group}={path.stem}"], ("reproduce.",)
        for key in _yaml_keys(raw):
            if not key.startswith(skip):
                assert f"| `{key}` |" in section, (path, key)


def test_configuration_reference_carries_the_comment_beside_a_key():
    page = docs_gen.config_reference_markdown(CONFIG_DIR)
    mnist = page.split("### `data=mnist`", 1)[1].split("### ", 1)[0]
    comment = (CONFIG_DIR / "data" / "mnist.yaml").read_text().split("download:", 1)[1].split("#", 1)[1]
    assert comment.splitlines()[0].strip() in mnist


# -- the README ------------------------------------------------------------------------------------------------
def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) < 300
    assert "make train" in text and "make test" in text
    image = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert image and (REPO / image.group(1)).is_file(), "the README shows one committed plot"


def test_readme_what_exists_names_every_registered_part():
    from lossbench import data
    from lossbench.heads import HEADS
    from lossbench.models import MODELS, OPTIMIZERS

    section = README.read_text().split("## What exists", 1)[1].split("\n## ", 1)[0]
    options = {group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
               for group in ("scheduler", "noise", "trainer", "logger")}
    parts = {"loss": losses.available(), "data": data.available(), "head": list(HEADS),
             "model": MODELS.names(), "optimizer": OPTIMIZERS.names(), **options}
    for group, names in parts.items():
        missing = [n for n in names if f"`{n}`" not in section and n != "none"]
        assert missing == [], f"README's 'What exists' lacks {group}: {missing}"


def test_readme_and_docs_pages_have_no_tracker_references_or_other_peoples_jobs():
    for path in [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]:
        found = TRACKER_REFERENCE.search(path.read_text())
        assert found is None, (path, found)


# where measured numbers live: the committed reports and the pages that copy them from there
MEASURED = ("reports/", "docs/findings.md", "docs/noise.md", "docs/statistics.md", "docs/benchmarks*.md",
            "docs/examples/", "pyproject.toml")


def _measured_text() -> str:
    files = subprocess.run(["git", "ls-files", *MEASURED], cwd=REPO, capture_output=True, text=True).stdout.split()
    out = [(REPO / name).read_text(errors="replace") for name in files if not name.endswith(".png")]
    return "\n".join(out).replace("−", "-")


def test_every_number_in_the_readme_is_in_a_committed_file():
    readme = README.read_text().replace("−", "-")
    numbers = set(re.findall(r"(?<![\w.])-?\d+\.\d+", readme))
    assert numbers, "the README quotes its headline numbers"
    committed = _measured_text()
    missing = sorted(n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n.lstrip('-'))}(?!\d)", committed))
    assert missing == [], f"numbers in the README found in no committed report or results page: {missing}"

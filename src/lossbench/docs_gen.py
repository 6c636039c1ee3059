"""Reference pages generated from the code and the config tree, so the docs cannot drift from either.

Used as a MkDocs hook (``mkdocs.yml``: ``hooks: [src/lossbench/docs_gen.py]``): a page line that is exactly
``<!-- lossbench:NAME -->`` is replaced by the Markdown of ``NAME``:

* ``losses`` -- one row per registered loss (``lossbench.losses.LOSSES``): its docstring's first paragraph,
  heads (the first is the natural one), tasks, per-class or per-sample, and constructor parameters with
  their defaults; then each loss module's whole docstring;
* ``api-losses`` -- a mkdocstrings block (``::: module``) per loss module;
* ``config-reference`` -- every config group under the config tree, every option and key with its default
  and the comment written beside it in the YAML file;
* ``include:PATH`` -- a file of the repository (e.g. ``CONTRIBUTING.md``) with its ``docs/`` links made
  relative to the site.

An unknown name stops the build (``mkdocs build --strict`` reports the error).
``python -m lossbench.docs_gen NAME`` prints the Markdown of one name.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lossbench import losses
from lossbench.config import TRAINER_KEYS_OWN
from lossbench.paths import CONFIG_DIR

PLACEHOLDER = re.compile(r"^<!-- lossbench:(?P<name>[\w:./-]+) -->$", re.MULTILINE)
REPO = Path(__file__).resolve().parents[2]

# group -> what it chooses; groups not listed here are still rendered (after these), without a sentence
GROUPS = {
    "data": "the dataset (`src/lossbench/data/`)",
    "loss": "the loss (`src/lossbench/losses/`); each file also selects the loss's natural head",
    "head": "how outputs become probabilities and decisions (`src/lossbench/heads.py`)",
    "model": "the network (`src/lossbench/models.py`)",
    "optimizer": "the torch optimizer; any of its constructor arguments can be set as `optimizer.<arg>=`",
    "scheduler": "the learning-rate schedule, stepped every optimizer step (`src/lossbench/module.py`)",
    "noise": "label perturbations of the training split (`src/lossbench/noise.py`)",
    "trainer": "the `lightning.Trainer` arguments; lossbench's own keys, not passed to the Trainer, are "
               + ", ".join(f"`{key}`" for key in TRAINER_KEYS_OWN),
    "logger": "where metrics go besides `metrics.csv` (`src/lossbench/loggers.py`)",
    "hydra/launcher": "how a multirun's jobs are launched",
    "experiment": "presets: overrides plus, for a multirun, the sweep they run",
}


# -- losses -------------------------------------------------------------------------------------------------
def _summary(doc: str) -> str:
    """A docstring's first paragraph on one line: what the loss is, and usually its source."""
    text = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    return text.rstrip(".").replace("``", "`")


def _docstring_markdown(doc: str) -> str:
    """A module docstring as Markdown: indented blocks stay code; a lone ``*`` (multiplication) in the
    prose is escaped so that it does not turn the text between two of them into emphasis."""
    lines = []
    for line in doc.strip().splitlines():
        if not line.startswith("    "):
            parts = re.split(r"(``.*?``|`[^`]*`)", line)
            line = "".join(part if part.startswith("`") else re.sub(r"(?<=\s)\*(?=\s)", r"\\*", part)
                           for part in parts)
        lines.append(line)
    return "\n".join(lines)


def _parameters(cls: type) -> str:
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name not in ("self", "reduction", "head")]
    shown = [f"`{p.name}` ({_plain(p.default)})" if p.default is not inspect.Parameter.empty else f"`{p.name}`"
             for p in params]
    return ", ".join(shown) or "—"


def _cell(text: str) -> str:
    """Text for a table cell: no column breaks, no stray HTML tags, links or emphasis from YAML comments."""
    for char, escaped in (("|", "\\|"), ("<", "&lt;"), ("[", "\\["), ("*", "\\*")):
        text = text.replace(char, escaped)
    return text


def losses_markdown() -> str:
    rows = ["| `loss=` | what it is | heads (first = natural) | tasks | values | parameters (default) |",
            "|---|---|---|---|---|---|"]
    sections = []
    for name, cls in losses.LOSSES.items():
        doc = inspect.getmodule(cls).__doc__ or ""
        rows.append(f"| [`{name}`](#{name}) | {_cell(_summary(doc))} | {', '.join(cls.heads)} | "
                    f"{', '.join(cls.tasks)} | {'per class' if cls.per_class else 'per sample'} | "
                    f"{_parameters(cls).replace('|', '&#124;')} |")
        module = inspect.getmodule(cls).__name__
        sections.append(f"### {name}\n\nclass `{cls.__name__}` in [`{module}`][{module}] · "
                        f"`configs/loss/{name}.yaml`\n\n{_docstring_markdown(doc)}\n")
    return "\n".join(rows) + "\n\n" + "\n".join(sections)


# -- the config tree ----------------------------------------------------------------------------------------
def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes is part of the value."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), ""


def yaml_comments(path: Path) -> tuple[str, dict[str, str]]:
    """(the file's leading comment, {dotted key: the comment beside it or on the lines just above it})."""
    header: list[str] = []
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings the current line is inside
    pending: list[str] = []
    started = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if not started and not text.startswith("@package"):
                header.append(stripped[1:].removeprefix(" ").rstrip())
            elif started:
                pending.append(text)
            continue
        if not stripped:
            pending = []
            continue
        started = True
        match = re.match(r"^(?P<indent> *)(?P<key>[\w.@/-]+):(?P<rest>.*)$", line)
        if not match:
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        _, comment = _split_comment(match["rest"])
        comments[dotted] = " ".join([*pending, comment]).strip()
        pending = []
        stack.append((indent, match["key"]))
    return _header_markdown(header), comments


def _header_markdown(lines: list[str]) -> str:
    """A file's leading comment as Markdown: indented lines (commands, layouts) as code blocks, the rest
    as one paragraph per blank-comment-separated group."""
    out: list[str] = []
    prose: list[str] = []
    code: list[str] = []

    def flush() -> None:
        if prose:
            out.append(_cell(" ".join(prose)))
            prose.clear()
        if code:
            out.append("```\n" + "\n".join(code) + "\n```")
            code.clear()

    for line in lines:
        if line.startswith("  "):
            if prose:
                flush()
            code.append(line.strip())
        elif line:
            if code:
                flush()
            prose.append(line)
        else:
            flush()
    flush()
    return "\n\n".join(out)


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        out = []
        for key, value in node.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, node)]


def _plain(value: Any) -> str:
    """A default as YAML writes it inline: null, true, [16, 32], {a: 1}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and (value == "" or value != value.strip()):
        return repr(value)
    return str(value)


def _value(value: Any) -> str:
    return "required" if value == "???" else f"`{_plain(value)}`"


def _keys_table(path: Path, group: str, skip: tuple[str, ...] = ()) -> tuple[str, str]:
    header, comments = yaml_comments(path)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    raw.pop("defaults", None)
    rows = []
    for key, value in _flatten(raw):
        if key.startswith(skip):
            continue
        meaning = _cell(comments[key]) if comments.get(key) else _note(group, path.stem, key)
        rows.append(f"| `{key}` | {_value(value).replace('|', '&#124;')} | {meaning} |")
    table = "| key | default | meaning |\n|---|---|---|\n" + "\n".join(rows) if rows else ""
    return header, table


# what a key means when its YAML file says nothing about it: (group, key), then ("*", key)
KEY_NOTES = {
    ("*", "name"): "the option's name; set by choosing the option",
    ("*", "batch_size"): "examples per training batch",
    ("*", "train_size"): "training examples used (null: all)",
    ("*", "val_size"): "validation examples",
    ("*", "test_size"): "test examples (null: all)",
    ("", "seed"): "the run's seed: initial weights, batch order, dropout",
    ("", "run_name"): "the run folder's name, and the W&B run name",
    ("", "losses"): "with members: the losses trained side by side (one head), e.g. losses=[bce_with_logits,zlpr]",
    ("loss", "reduction"): "mean, sum or sum_classes ([reductions](losses.md#reductions))",
    ("optimizer", "lr"): "learning rate",
    ("optimizer", "weight_decay"): "weight decay, as the torch optimizer defines it",
    ("optimizer", "momentum"): "momentum",
    ("head", "threshold"): "multi-label: a class is predicted when its probability exceeds this (the fixed rule)",
    ("trainer", "accelerator"): "cpu, gpu or auto",
    ("trainer", "devices"): "devices per node",
    ("trainer", "precision"): "Lightning's precision: 32-true, 64-true, 16-mixed, bf16-mixed, ...",
    ("noise", "seed"): "fixes the corruption apart from the run's seed: every strategy and seed sees the same labels",
    ("noise", "rate"): "the share of training labels perturbed",
}


def _note(group: str, option: str, key: str) -> str:
    """What to say about a key its YAML file leaves uncommented."""
    for where in ((group, key), ("*", key)):
        if where in KEY_NOTES:
            return KEY_NOTES[where]
    if group == "loss":
        return f"see [`{option}`](losses.md#{option})"
    if key.startswith("hydra.sweeper.params."):
        return "the values a multirun (`-m`) sweeps"
    if group == "experiment":
        return "overrides the default (see its group)"
    return ""


def config_groups(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Every folder of the config tree holding YAML files, as a Hydra group name (``hydra/launcher``)."""
    found = sorted({p.parent.relative_to(config_dir).as_posix() for p in config_dir.rglob("*.yaml")} - {"."})
    return [g for g in GROUPS if g in found] + [g for g in found if g not in GROUPS]


def config_reference_markdown(config_dir: Path = CONFIG_DIR) -> str:
    header, table = _keys_table(config_dir / "train.yaml", "", skip=("hydra.",))
    out = ["## Top-level keys (`train.yaml`)", "", header, "", table, ""]
    for group in config_groups(config_dir):
        out += [f"## `{group}=`", ""]
        if group in GROUPS:
            out += [f"Chooses {GROUPS[group]}.", ""]
        for path in sorted((config_dir / group).glob("*.yaml")):
            header, table = _keys_table(path, group, skip=("reproduce.",))
            out += [f"### `{group}={path.stem}`", "", f"`configs/{group}/{path.name}`", ""]
            if header:
                out += [header, ""]
            protocol = OmegaConf.load(path).get("reproduce")
            if protocol is not None:
                out += ["The reproduction protocol under `reproduce:` (read by `lossbench-reproduce`, see "
                        "[Reproducing the claims](reproduce.md)) sets: "
                        + ", ".join(f"`{k}`" for k in protocol) + ".", ""]
            if table:
                out += [table, ""]
    return "\n".join(out)


# -- includes -----------------------------------------------------------------------------------------------
def include_markdown(relative: str, root: Path = REPO) -> str:
    text = (root / relative).read_text()
    # links written for the repository (docs/x.md) point into the site (x.md) once the file is a page
    return re.sub(r"\]\(docs/", "](", text)


def api_losses_markdown() -> str:
    """One mkdocstrings block per loss module: a new loss gets its API page without editing the docs."""
    modules = sorted({inspect.getmodule(cls).__name__ for _, cls in losses.LOSSES.items()})
    return "\n\n".join(f"::: {module}" for module in ["lossbench.losses", "lossbench.losses.base", *modules])


def render(name: str, root: Path = REPO) -> str:
    """The Markdown of one placeholder; ``root`` is the repository (the folder of ``mkdocs.yml``)."""
    if name == "losses":
        return losses_markdown()
    if name == "api-losses":
        return api_losses_markdown()
    if name == "config-reference":
        return config_reference_markdown()
    if name.startswith("include:"):
        return include_markdown(name.removeprefix("include:"), root)
    raise ValueError(f"unknown lossbench placeholder {name!r}; known: losses, api-losses, config-reference, "
                     "include:PATH")


def on_files(files: Any, config: Any = None, **_: Any) -> Any:
    """MkDocs hook: the committed report plots (``reports/**/*.png``) become site files, so a page shows a
    report's plot from its one committed copy."""
    from mkdocs.structure.files import File

    root = Path(config["config_file_path"]).parent if config else REPO
    for image in sorted((root / "reports").rglob("*.png")):
        files.append(File(image.relative_to(root).as_posix(), str(root), config["site_dir"],
                          config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None, **_: Any) -> str:
    """MkDocs hook: replace every ``<!-- lossbench:NAME -->`` line by its generated Markdown, and point
    links written for the repository (``../reports/``, right on GitHub) at the site's copy of reports/."""
    root = Path(config["config_file_path"]).parent if config else REPO
    markdown = PLACEHOLDER.sub(lambda m: render(m["name"], root), markdown)
    depth = page.file.src_uri.count("/") if page is not None else 0
    return markdown.replace("](../reports/", "](" + "../" * depth + "reports/")


if __name__ == "__main__":
    print(render(sys.argv[1]))

"""The README and docs/ stay true: length, the CI test command, links and anchors, the generated option
reference, every results.json key documented, documented commands and Python names that exist, and numbers
that live in dated results pages."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: Pages other branches add (the lead merges them); a link to one is checked once it exists.
PENDING: set[str] = set()  # none now: scale.md (issue 25) and causal.md (issue 29) have landed
MAX_README_LINES = 200


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def guide_files() -> list[Path]:
    return [README, *sorted((DOCS / "guides").glob("*.md"))]


def strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links stay)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def links(text: str) -> list[tuple[str, str]]:
    """``(link text, target)`` of every markdown link and image outside code."""
    return [(m.group(1) or "", m.group(2) or m.group(3)) for m in LINK.finditer(strip_code(text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading: its text
    text = text.replace("`", "").lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    found |= set(re.findall(r'<a (?:id|name)="([^"]+)"', text))
    return found


# ------------------------------------------------------------------------------------------ the README
def test_readme_is_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move how-to text into docs/guides/"


def test_readme_shows_the_exact_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(ci) if "README test command" in line)
    command = ci[marker + 1].strip()
    assert command == "python -m pytest -q -n 2"
    assert any(command in block.splitlines() for block in fenced_blocks(README.read_text(), "bash"))


def test_readme_config_table_names_every_config_group():
    text = README.read_text()
    groups = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir())
    missing = [g for g in groups if f"`{g}/`" not in text]
    assert missing == [], f"conf groups missing from the README's config table: {missing}"


# ------------------------------------------------------------------------------------------ links
def test_every_relative_link_resolves_to_a_file_and_an_anchor():
    bad = []
    for page in markdown_files():
        for _, target in links(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
            if not dest.exists():
                if rel not in PENDING:
                    bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {rel})")
    assert bad == []


def test_the_link_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Title here\n\n## `cbm.*`: the bottleneck (CBMConfig)\n")
    page.write_text("[x](b.md#title-here) [y](b.md#nope) [z](c.md) `[w](d.md)`\n")
    found = links(page.read_text())
    assert [t for _, t in found] == ["b.md#title-here", "b.md#nope", "c.md"]
    assert anchors(tmp_path / "b.md") == {"title-here", "cbm-the-bottleneck-cbmconfig"}


# ------------------------------------------------------------------------------------------ numbers
def test_numbers_in_the_readme_and_guides_link_to_a_dated_results_page():
    """A measured figure (a decimal number) in the README or a guide is a link into docs/results/; the
    measurements live there, once, with their date, seeds and command."""
    bad = []
    for page in guide_files():
        text = strip_code(page.read_text())
        for text_of_link, target in links(page.read_text()):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.parent == (DOCS / "results").resolve() and re.match(r"\d{4}-\d{2}-\d{2}-", dest.name):
                text = text.replace(f"[{text_of_link}]({target})", "")
        text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets are not figures
        bad += [f"{page.relative_to(ROOT)}: {m}" for m in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)]
    assert bad == [], "put these figures in a docs/results/<date>-<topic>.md page and link to it"


def test_a_linked_figure_is_on_the_page_it_links_to():
    """``[65.7 ± 0.7](docs/results/...)``: the figure, with its spread, is written on that page."""
    bad = []
    for page in markdown_files():
        for text, target in links(page.read_text()):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.parent != (DOCS / "results").resolve() or not dest.is_file():
                continue
            body = dest.read_text()
            bad += [f"{page.relative_to(ROOT)}: {f} not in {dest.name}"
                    for f in re.findall(r"\d+\.\d+(?: ± \d+\.\d+)?", text) if f not in body]
    assert bad == []


def test_results_pages_are_dated():
    pages = [p for p in (DOCS / "results").iterdir() if p.name != "README.md"]
    assert pages and all(re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.(md|json)$", p.name) for p in pages)
    for page in (p for p in pages if p.suffix == ".md"):  # a date and a command near the top of every page
        head = page.read_text()[:1500]
        assert re.search(r"\d{4}-\d{2}-\d{2}", head) and re.search(r"`[^`]+`", head), page.name


# ------------------------------------------------------------------------------------------ options.md
def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "reference" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_reference_is_generated_from_the_current_code_and_configs():
    gen = _generator()
    assert (DOCS / "reference" / "options.md").read_text() == gen.generate(), (
        "docs/reference/options.md is stale: run python docs/reference/generate.py")


def test_options_reference_lists_every_cbm_option_and_config_file():
    import dataclasses

    from sparsecbm.models.cbm_config import CBMConfig

    text = (DOCS / "reference" / "options.md").read_text()
    assert all(f"`cbm.{f.name}`" in text for f in dataclasses.fields(CBMConfig))
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert [f for f in files if f"`{f}`" not in text] == []


def test_the_yaml_reader_keeps_values_comments_and_lists(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("# Header line.\ndefaults:\n  - a: b\n  - _self_\n# above\nkey: 1   # beside\n"
                 "         # and more\nouter:  # parent\n  inner: '#not a comment'\n")
    header, rows = _generator().parse_yaml(f)
    assert header == ["Header line."]
    assert rows == [("defaults", "[a: b, _self_]", ""), ("key", "1", "above beside and more"),
                    ("outer", "", "parent"), ("outer.inner", "'#not a comment'", "")]


# ------------------------------------------------------------------------------------------ results.json
def documented_result_keys() -> set[str]:
    """The key patterns in the first column of docs/reference/results-json.md's tables, braces expanded."""
    out = set()
    for line in (DOCS / "reference" / "results-json.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        for pattern in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            m = re.search(r"\{([^}]+)\}", pattern)
            alts = m.group(1).split(",") if m else [""]
            out |= {pattern.replace(m.group(0), a) if m else pattern for a in alts}
    return out


def result_key_patterns(result: dict) -> set[str]:
    """Every leaf key path of a results.json, with names replaced by the placeholders the page uses."""
    concepts = set(result.get("data", {}).get("concepts", []))
    out = set()

    def walk(node, path):
        if path and path[0] in ("config", "evaluate_config"):
            out.add(f"{path[0]}.*")
            return
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, [*path, str(k)])
            return
        parts = []
        for i, seg in enumerate(path):
            if i == 0 and seg in ("val", "test"):
                seg = "<split>"
            elif i == 2 and path[0] == "data" and seg in ("train", "dev", "test"):
                seg = "<data_split>"
            elif seg in concepts:
                seg = "<concept>"
            elif "|" in seg:
                seg = "<pair>"
            elif seg.isdigit():
                seg = "<block>"
            parts.append(seg)
        out.add(".".join(parts))

    walk(result, [])
    return out


def test_result_key_patterns_use_the_placeholders():
    result = {"test": {"per_concept": {"food": {"acc": 1}}}, "data": {"concepts": ["food"], "sizes": {"dev": 3}},
              "subnetworks": {"jaccard": {"food|noise": {"4": 0.1}}}, "config": {"a": 1}}
    assert result_key_patterns(result) == {"<split>.per_concept.<concept>.acc", "data.concepts",
                                           "data.sizes.<data_split>", "subnetworks.jaccard.<pair>.<block>",
                                           "config.*"}
    assert {"<split>.label.acc", "<split>.label.f1", "config.*"} <= documented_result_keys()


@pytest.mark.slow
def test_every_key_a_smoke_run_writes_is_documented(serve_ckpts, tmp_path):
    """Smoke runs that between them write every section: a sparse cem model (value-only and subnetwork
    keys), a dense hybrid with token gates (residual and tokens_kept), a standard model, and an evaluate run."""
    from testkit import TINY_BERT, compose_cfg

    from sparsecbm.evaluate import evaluate
    from sparsecbm.train import train

    runs = [serve_ckpts["sparse"].parent.parent / "results.json"]
    for name, extra in {"hybrid": ["cbm=hybrid", "cbm.tokens=gates"], "standard": ["cbm=standard"]}.items():
        train(compose_cfg(tmp_path / name, ["experiment=smoke", *TINY_BERT, *extra]))
        runs.append(tmp_path / name / "results.json")
    evaluate(compose_cfg(tmp_path / "eval", [f"ckpt_path={serve_ckpts['sparse']}"], "evaluate"))
    runs.append(tmp_path / "eval" / "results.json")
    documented = documented_result_keys()
    written = set().union(*(result_key_patterns(json.loads(r.read_text())) for r in runs))
    assert sorted(written - documented) == [], "document these keys in docs/reference/results-json.md"
    # and documents no key that runs do not write (sections are named without a dot; a graded concept's mae
    # needs graded data, tested in tests/data/test_annotated.py)
    never = {k for k in documented - written if "." in k} - {"<split>.per_concept.<concept>.mae"}
    assert sorted(never) == []


# ------------------------------------------------------------------------------------------ commands
def _entry_config(module: str) -> str | None:
    """The conf/<name>.yaml a ``python -m`` module composes (``None``: not a Hydra command, e.g. tables)."""
    rel = module.split(".")[1:]
    path = ROOT.joinpath("sparsecbm", *rel)
    source = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    assert source.is_file(), f"python -m {module}: no such module"
    text = source.read_text()
    if "from sparsecbm.serve.cli import main" in text:
        return "serve"
    m = re.search(r'hydra_entry_point\("(\w+)"', text)
    return m.group(1) if m else None


#: ``bash run.sh <command>`` -> the config it composes (None: no Hydra config to compose, e.g. the test suite)
RUN_SH_COMMANDS = {"train": "train", "evaluate": "evaluate", "intervene": "intervene", "explain": "explain",
                   "serve": "serve", "serve-bench": "serve", "annotate": "annotate", "bench": "bench",
                   "label-refit": "label_refit", "tables": "tables", "aggregate": "aggregate", "test": None, "help": None}


def documented_commands() -> list[tuple[Path, str, list[str]]]:
    """``(page, config name, overrides)`` of every ``bash run.sh`` / ``python -m sparsecbm.*`` line in a bash
    block of the README and the guides (a comma list in a multirun is read as its first value)."""
    out = []
    for page in [README, *sorted((DOCS / "guides").glob("*.md")), DOCS / "architecture.md"]:
        if not page.is_file():
            continue
        for block in fenced_blocks(page.read_text(), "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                # what the shell does first: the date and variables ($CKPT) become plain words
                line = re.sub(r"\$\{?(\w+)\}?", r"\1", line.split(" #")[0].replace("$(date +%F)", "2026-01-01")).strip()
                m = re.match(r"^(?:[A-Z_]+=\S+ )*(bash run\.sh|python -m (sparsecbm(?:\.\w+)+))(?:\s+(.*))?$", line)
                if not m:
                    continue
                name = "train" if m.group(1) == "bash run.sh" else _entry_config(m.group(2))
                if m.group(1) == "bash run.sh" and m.group(3):  # bash run.sh <command> ...: that command's config
                    first, _, rest = m.group(3).partition(" ")
                    if first in RUN_SH_COMMANDS:
                        name = RUN_SH_COMMANDS[first]
                        line = f"{m.group(1)} {rest}"
                        m = re.match(r"^(bash run\.sh)()(?:\s+(.*))?$", line.strip())
                if name is None:
                    continue
                args = [a for a in shlex.split(m.group(3) or "") if a != "-m"]
                multirun = "-m" in shlex.split(m.group(3) or "")
                if multirun:
                    args = [re.sub(r"^([^=\[]+=)([^\[{,]+),.*$", r"\1\2", a) for a in args]
                out.append((page, name, args))
    return out


def test_every_documented_command_composes_with_the_real_configs(tmp_path):
    from testkit import compose_cfg

    commands = documented_commands()
    assert len(commands) > 20
    bad = []
    for page, name, args in commands:
        args = [a for a in args if not a.startswith("hydra.sweeper.") or name != "train"]
        try:
            compose_cfg(tmp_path, args, name)
        except Exception as e:  # noqa: BLE001 - report every failing line at once
            bad.append(f"{page.relative_to(ROOT)}: {name} {' '.join(args)}: {type(e).__name__}: {str(e)[:200]}")
    assert bad == []


def test_every_python_name_in_the_docs_exists():
    """``from sparsecbm... import X`` and ``sparsecbm.X`` in the Python examples name real objects."""
    import sparsecbm

    bad = []
    for page in [README, *sorted(DOCS.rglob("*.md"))]:
        for block in fenced_blocks(page.read_text(), "python"):
            tree = ast.parse(block)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sparsecbm"):
                    module = importlib.import_module(node.module)
                    bad += [f"{page.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sparsecbm":
                    if not hasattr(sparsecbm, node.attr):
                        bad.append(f"{page.name}: sparsecbm.{node.attr}")
        for mod in re.findall(r"python -m (sparsecbm(?:\.\w+)+)", page.read_text()):
            if page.parent.name != "results":  # results pages keep the commands as they were run
                try:
                    _entry_config(mod)
                except AssertionError as e:
                    bad.append(f"{page.name}: {e}")
    assert bad == []

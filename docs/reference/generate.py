"""Write docs/reference/options.md from the code and the config files: ``python docs/reference/generate.py``.

Sources, read as they are (nothing is imported from the training side):

- :class:`sparsecbm.models.cbm_config.CBMConfig`: every ``cbm.<option>``, its default (the dataclass field), its
  meaning (the comment beside it in ``conf/cbm/joint.yaml``, else the class docstring's ``Args:``) and the
  presets of ``conf/cbm/*.yaml`` that change it;
- :class:`sparsecbm.sparsity.schedule.Schedule`: every ``sparsity.schedule.<option>`` and its default;
- every ``conf/*.yaml`` and ``conf/<group>/*.yaml``: its header comment and each key with its value and the
  comment beside (or above) it.

``--check`` exits with 1 when options.md differs from what this script writes (``tests/test_docs.py`` runs the
same comparison).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
OUT = Path(__file__).resolve().parent / "options.md"
#: Groups whose files are catalogues (data for a command, or one-row presets): listed with their header only.
CATALOGUES = {"concept_bank", "table_row", "bottleneck_row"}
_KEY = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?(?P<key>[A-Za-z_+/@][\w+/@.]*|\"[^\"]+\"|'[^']+'):(?:\s+|$)(?P<rest>.*)$")


def split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes or brackets does not start a comment."""
    quote, depth = None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "#" and depth <= 0 and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), ""


def parse_yaml(path: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    """A config file's header comment lines and its rows ``(dotted key, value as written, comment)``.

    The comment of a row is the one beside it, after the comment lines right above it. A key with nested
    keys gets a row only when it carries a comment; a block list (``defaults:``) becomes one row.
    """
    header, rows, stack, pending = [], [], [], []
    lines = path.read_text().splitlines()
    seen_key, i, comment_col = False, 0, None  # comment_col: where the last row's own comment starts
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if not stripped:
            pending = [] if seen_key else pending
            comment_col = None
            continue
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text.startswith("@package"):
                header.append(f"(`{text}`: its keys are set at the top level of the config)")
            elif not seen_key:
                header.append(text)
            elif comment_col is not None and line.index("#") == comment_col and rows:
                key, value, before = rows[-1]  # the comment beside the last row goes on in this line
                rows[-1] = (key, value, f"{before} {text}".strip())
            else:
                pending.append(text)
                comment_col = None
            continue
        m = _KEY.match(line)
        if m is None or m.group("dash"):
            continue  # a list item or a value continued on the next line: read with its key below
        seen_key = True
        indent, key = len(m.group("indent")), m.group("key").strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = split_comment(m.group("rest"))
        comment_col = line.rindex("#") if comment else None
        dotted = ".".join([k for _, k in stack] + [key])
        if value == "":  # a mapping or a block list follows
            items = []
            while i < len(lines) and (lines[i].strip().startswith("- ") or lines[i].strip() == "-"):
                item, item_comment = split_comment(lines[i].strip()[2:])
                items.append(item)
                comment = comment or item_comment
                i += 1
            if items:
                value = "[" + ", ".join(items) + "]"
            else:
                stack.append((indent, key))
                if comment or pending:
                    rows.append((dotted, "", " ".join([*pending, comment]).strip()))
                pending = []
                continue
        rows.append((dotted, value, " ".join([*pending, comment]).strip()))
        pending = []
    return header, rows


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{cell(text)}`" if text else ""


def table(rows: list[tuple[str, str, str]], head: tuple[str, str, str] = ("key", "value", "meaning")) -> list[str]:
    out = [f"| {head[0]} | {head[1]} | {head[2]} |", "|---|---|---|"]
    out += [f"| {code(k)} | {code(v)} | {cell(c)} |" for k, v, c in rows]
    return out


def docstring_args(cls) -> dict[str, str]:
    """``Args:`` of a Google-style class docstring: ``name`` (or ``a / b / c``) -> its text."""
    doc = cls.__doc__ or ""
    doc = doc.split("Args", 1)[1] if "Args" in doc else ""
    out, names = {}, None
    for line in doc.splitlines()[1:]:
        m = re.match(r"^\s{4,8}([\w /]+):\s+(.*)$", line)
        if m and not line.startswith(" " * 12):
            names = [n.strip() for n in m.group(1).split("/")]
            for n in names:
                out[n] = m.group(2).strip()
        elif names and line.strip():
            for n in names:
                out[n] += " " + line.strip()
    return {k: re.sub(r":(?:class|func|mod|meth):`~?([\w.]+)`", r"`\1`", v).replace("``", "`") for k, v in out.items()}


def cbm_section() -> list[str]:
    from sparsecbm.models.cbm_config import CBMConfig

    _, joint = parse_yaml(CONF / "cbm" / "joint.yaml")
    comments = {k: c for k, _, c in joint}
    args = docstring_args(CBMConfig)
    presets: dict[str, list[str]] = {}
    for f in sorted((CONF / "cbm").glob("*.yaml")):
        if f.stem == "joint":
            continue
        for key, value, _ in parse_yaml(f)[1]:
            if key not in ("defaults", "_target_"):
                presets.setdefault(key, []).append(f"{f.stem}: {value}")
    lines = ["## `cbm.*`: the bottleneck and its training mode (`CBMConfig`)", "",
             "Every file in `conf/cbm/` builds one `sparsecbm.models.cbm_config.CBMConfig`; any option is a flat "
             "override (`cbm.tokens=attention`) and an unknown key is an error. *Default* is the dataclass "
             "default (= `conf/cbm/joint.yaml`); *presets* are the `conf/cbm/<name>.yaml` files that change it.", "",
             "| option | default | presets | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(CBMConfig):
        # the comment in joint.yaml, else the docstring's entry, else the entry that names this option
        meaning = comments.get(f.name) or args.get(f.name) or next(
            (f"see `cbm.{k}`" for k, v in args.items() if f"`{f.name}`" in v), "")
        lines.append(f"| `cbm.{f.name}` | {code(repr(f.default))} | {cell(', '.join(presets.get(f.name, [])))} | "
                     f"{cell(meaning)} |")
    return lines + [""]


def schedule_section() -> list[str]:
    from sparsecbm.sparsity.schedule import Schedule

    _, rows = parse_yaml(CONF / "sparsity" / "magnitude.yaml")
    comments = {k.removeprefix("schedule."): c for k, _, c in rows if k.startswith("schedule.")}
    doc = " ".join((Schedule.__doc__ or "").split())
    doc = doc.replace("``", "`")
    lines = ["## `sparsity.schedule.*`: when the masks reach which sparsity (`Schedule`)", "", doc, "",
             "| option | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Schedule):
        lines.append(f"| `sparsity.schedule.{f.name}` | {code(repr(f.default))} | {cell(comments.get(f.name, ''))} |")
    return lines + [""]


def file_section(path: Path, level: str = "###") -> list[str]:
    header, rows = parse_yaml(path)
    rel = path.relative_to(ROOT).as_posix()
    out = [f"{level} `{rel}`", ""]
    if len(header) == 1:
        out += [header[0], ""]
    elif header:
        out += ["```text", *header, "```", ""]
    if rows:
        out += table(rows) + [""]
    return out


def generate() -> str:
    """The text of options.md."""
    lines = ["# Every option", "",
             "<!-- Generated by `python docs/reference/generate.py` from CBMConfig, Schedule and conf/**/*.yaml; "
             "do not edit by hand (tests/test_docs.py fails when this file is stale). -->", "",
             "Commands take Hydra overrides: `key=value`, `group=option` (a file of `conf/<group>/`), `+key=value` "
             "to add a key, `-m` for a sweep. The tables below list each config file's keys as written there, "
             "with the comment beside them. Guides: [training](../guides/training.md), "
             "[subnetworks](../guides/subnetworks.md), [interventions](../guides/interventions.md), "
             "[explanations](../guides/explanations.md), [explorer](../guides/explorer.md), "
             "[data](../guides/data.md).", ""]
    lines += cbm_section() + schedule_section()
    lines += ["## Commands: `conf/<command>.yaml`", "",
              "One file per command (`python -m sparsecbm.<command>`); the inference commands share "
              "`conf/inference/default.yaml` (below, under *inference*).", ""]
    for f in sorted(CONF.glob("*.yaml")):
        lines += file_section(f)
    lines += ["## Config groups: `conf/<group>/<option>.yaml`", "",
              "Pick one file of a group with `group=option` (`cbm=strict`, `sparsity=structured`); nested groups "
              "are named with a slash (`+backbone/lora=default`).", ""]
    groups = sorted({p.parent.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml") if p.parent != CONF})
    for group in groups:
        files = sorted((CONF / group).glob("*.yaml"))
        lines += [f"### `{group}`", ""]
        if group in CATALOGUES:
            lines += ["| file | what it is |", "|---|---|"]
            lines += [f"| `{f.relative_to(ROOT).as_posix()}` | {cell(' '.join(h for h in parse_yaml(f)[0] if '@package' not in h))} |" for f in files] + [""]
            continue
        for f in files:
            lines += file_section(f, "####")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python docs/reference/generate.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))

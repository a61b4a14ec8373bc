"""The package's structure (imports inside functions count): no import cycle; records stay at the bottom;
lower layers import nothing from above; inference (checkpoint, session) never imports the training side or an
entry point; no entry point imports another; no module is over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import sparsecbm

PKG = Path(sparsecbm.__file__).parent
#: Records and helpers that run no model: they import only each other.
RECORDS = ("sparsecbm.errors", "sparsecbm.metrics", "sparsecbm.jsonio", "sparsecbm.lazy", "sparsecbm.concepts",
           "sparsecbm.config", "sparsecbm.ceiling", "sparsecbm.results", "sparsecbm.run_result",
           # the option schema, the run folder, writing outputs, log routing: run no model, checked before one loads
           "sparsecbm.options", "sparsecbm.option_checks", "sparsecbm.backbone_facts", "sparsecbm.runs",
           "sparsecbm.outputs", "sparsecbm.logs", "sparsecbm.keyvalue")
#: The commands (``python -m ...``): nothing imports them and they import no other command.
ENTRY_POINTS = ("sparsecbm.train", "sparsecbm.evaluate", "sparsecbm.intervene", "sparsecbm.explain",
                "sparsecbm.label_refit", "sparsecbm.bench", "sparsecbm.tables", "sparsecbm.aggregate",
                "sparsecbm.causal", "sparsecbm.serve.cli", "sparsecbm.annotate.__main__")
LOW = ("sparsecbm.models", "sparsecbm.data", "sparsecbm.sparsity", *RECORDS)
HIGH = ("sparsecbm.interpret", "sparsecbm.lit", "sparsecbm.callbacks", "sparsecbm.session", "sparsecbm.serve",
        "sparsecbm.annotate", "sparsecbm.timing", *ENTRY_POINTS)
#: Inference: loading a model and running it never reaches the training side or a command.
INFERENCE = ("sparsecbm.checkpoint", "sparsecbm.session")
TRAINING = ("sparsecbm.lit", "sparsecbm.callbacks", "sparsecbm.interpret", "sparsecbm.serve", *ENTRY_POINTS)


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _targets(module: str, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            if modules[module].name != "__init__.py":
                parts = parts[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = []
    for name in names:
        while name and name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """Every ``sparsecbm`` module -> the ``sparsecbm`` modules it imports anywhere in its body."""
    modules = _modules()
    return {m: {t for node in ast.walk(ast.parse(f.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))
                for t in _targets(m, node, modules)} for m, f in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_a_function_level_import(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    # a function-level import is an edge: evaluate imports the session inside a function
    assert "sparsecbm.session" in graph["sparsecbm.evaluate"]


def test_no_import_cycle_inside_the_package():
    assert cycles(import_graph()) == []


def test_lower_layers_import_no_upper_layer():
    bad = sorted((m, d) for m, deps in import_graph().items() if _is(m, LOW) for d in deps if _is(d, HIGH))
    assert bad == []


def _is(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_records_import_only_records():
    bad = sorted((m, d) for m, deps in import_graph().items() if _is(m, RECORDS) for d in deps if not _is(d, RECORDS))
    assert bad == []


def test_inference_never_imports_the_training_side_or_a_command():
    graph = import_graph()
    bad = sorted((m, d) for m in INFERENCE for d in graph[m] if _is(d, TRAINING))
    assert bad == []


def test_no_command_imports_another():
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() for d in deps
                 if _is(d, ENTRY_POINTS) and d != m and not m.startswith(d.rsplit(".", 1)[0] + ".__main__")
                 and not (m.startswith("sparsecbm.serve.") and d == "sparsecbm.serve.cli"))
    assert bad == []


MAX_LINES = 400


def test_no_module_over_400_lines():
    long = {m: n for m, f in _modules().items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (lines): {long}"


def test_every_console_script_resolves_to_a_main():
    import importlib

    import tomllib

    scripts = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["project"]["scripts"]
    entry_modules = {"train", "evaluate", "intervene", "explain", "serve", "bench", "tables", "aggregate",
                     "label-refit", "annotate"} | ({"causal"} if (PKG / "causal.py").exists() else set())
    assert {name.removeprefix("sparsecbm-") for name in scripts} == entry_modules
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_tests_share_helpers_only_through_testkit():
    """A test module never imports another test module or conftest (what they share is in tests/testkit), so
    moving or running one file alone cannot break another; pytest's pythonpath is only ``tests``."""
    import tomllib

    tests = PKG.parent / "tests"
    bad = {str(f.relative_to(tests)): sorted(n for n in _imported_names(f) if n.startswith("test_") or n == "conftest")
           for f in tests.rglob("*.py")}
    assert {f: n for f, n in bad.items() if n} == {}
    config = tomllib.loads((PKG.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert config["pythonpath"] == ["tests"]

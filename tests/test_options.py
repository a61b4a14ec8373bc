"""The option schema (sparsecbm/options.py): every declared option refuses its bad values with exit code 2 and
a message naming it; every numeric option of every command is declared; the checks that need more than one
option (pruning window, backbone size, set= duplicates, annotate's output folder, a busy port) hold; and
all of it answers before a model loads."""

from __future__ import annotations

import math
import socket
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from testkit import ROOT, TINY_BERT, TINY_DATA

from sparsecbm.config import CONF_DIR
from sparsecbm.errors import USER_ERROR_EXIT, ConfigError, user_errors
from sparsecbm.option_checks import _MISSING, _value, duplicate_keys
from sparsecbm.options import SCHEMA, Option, check_options, options

EXISTING_FILE = TINY_DATA / "train.csv"  # the schema only checks that ckpt_path names a file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_overrides(command: str, tmp_path) -> list[str]:
    """A valid command line of ``command`` with every option group the schema covers selected."""
    inference = [f"ckpt_path={EXISTING_FILE}"]
    return {
        "train": ["experiment=smoke", *TINY_BERT, "sparsity=structured"],
        "evaluate": inference, "intervene": inference, "explain": inference, "label_refit": inference,
        "causal": inference,
        "serve": [*inference, f"port={free_port()}"],
        "annotate": [f"out_dir={tmp_path / 'annotated'}", f"data.root={TINY_DATA}"],
        "bench": [f"data.root={TINY_DATA}"],
        "tables": [f"runs=[{TINY_DATA}]"], "aggregate": [f"multirun_dir={tmp_path}"],
    }[command]


def composed(command: str, overrides: list[str]):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(command, overrides=overrides)


def bad_values(option: Option) -> list:
    """Values ``option`` must refuse (each violates one part of its declaration)."""
    def num(x):
        return int(x) if option.kind == "int" else float(x)

    out: list = []
    if option.kind in ("int", "float"):
        if option.low is not None:
            out.append(num(option.low) if option.low_open else num(option.low) - 1)
        if option.high is not None:
            out.append(num(option.high) if option.high_open else num(option.high) + 1)
        out.append("abc")
        if option.kind == "int":
            out.append(1.5)
        else:
            out.append(math.nan)
    elif option.kind == "seed":
        out += ["abc", 1.5]
    elif option.kind == "bool":
        out += ["maybe", 2]
    elif option.kind == "choice":
        out.append("__no_such_name__")
    elif option.kind == "text":
        out += ["", "   "] + ([[]] if option.each else [])
    elif option.kind == "file":
        out += ["/nonexistent/model.ckpt", str(TINY_DATA)]  # missing; a folder
    elif option.kind == "dir":
        out += ["/nonexistent/folder", str(EXISTING_FILE)]  # missing; a file
    elif option.kind == "path":
        out.append("/nonexistent/runs")
    elif option.kind == "outfile":
        out += [str(TINY_DATA), str(EXISTING_FILE / "table.md")]  # a folder; under a file
    elif option.kind == "port":
        out += [0, 70000, "http"]
    if not option.null:
        out.append(None)
    return [[v] if option.each and v is not None and v != [] else v for v in out]


@pytest.mark.parametrize("command", list(SCHEMA))
def test_every_declared_option_refuses_its_bad_values(command, tmp_path, capsys):
    base = composed(command, base_overrides(command, tmp_path))
    check_options(command, base)  # the valid command line passes
    checked = []
    for option in options(command):
        if _value(base, option.key) is _MISSING:
            continue  # its group is not selected here (e.g. trainer.accumulate_grad_batches is not in the config)
        for bad in bad_values(option):
            cfg = base.copy()
            OmegaConf.update(cfg, option.key, bad, merge=False)
            with pytest.raises(SystemExit) as e:
                user_errors(check_options)(command, cfg)
            err = capsys.readouterr().err
            assert e.value.code == USER_ERROR_EXIT, (option.key, bad)
            assert err.startswith(f"error: {option.key}=") or err.startswith("error: checkpoint not found"), (option.key, bad, err)
            assert "Traceback" not in err, err
            if option.kind in ("file", "dir", "path") and bad is not None:  # says what it found instead
                assert "expected an existing" in err or "checkpoint not found" in err, (option.key, err)
            else:
                assert option.expected().split(" or null")[0] in err, (option.key, err)
        checked.append(option.key)
    assert len(checked) >= 0.8 * len(options(command)), sorted({o.key for o in options(command)} - set(checked))


#: numeric/boolean leaves deliberately left to their own checks, and why
UNDECLARED = {
    "debug": "read from the command line itself (debug=true|1|yes) before Hydra composes",
    "trainer.devices": "an integer, a list or 'auto': Lightning validates it",
    "backbone.config.": "a Hugging Face config (overrides of config.json): transformers validates it",
    "callbacks.": "arguments of the default checkpoint callbacks (Lightning validates them), not user options",
    "configs.": "bench's table of timed configurations, not options",
}


@pytest.mark.parametrize("command", list(SCHEMA))
def test_every_numeric_option_is_declared(command, tmp_path):
    """A new numeric or boolean option without a declaration fails here: add it to sparsecbm/options.py."""
    cfg = composed(command, base_overrides(command, tmp_path))
    declared = {o.key for o in options(command)}

    def leaves(node, prefix=""):
        for key in node.keys():
            child = node._get_node(key)
            if OmegaConf.is_dict(child):
                yield from leaves(child, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", OmegaConf.to_container(child) if OmegaConf.is_list(child) else child._value()

    missing = []
    for key, value in leaves(cfg):
        if key.startswith(("hydra.", "paths.")) or key.rsplit(".", 1)[-1].startswith("_"):
            continue
        numbers = isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value)
        if (isinstance(value, (int, float, bool)) or numbers) and key not in declared \
                and not any(key == u or (u.endswith(".") and key.startswith(u)) for u in UNDECLARED):
            missing.append(key)
    assert not missing, f"declare these options of {command} in sparsecbm/options.py: {missing}"


# ------------------------------------------------------------------------------------ cross-option checks
def _train(*extra: str):
    return composed("train", ["experiment=smoke", *TINY_BERT, *extra])


@pytest.mark.parametrize("extra,message", [
    (["sparsity=structured", "sparsity.schedule.end=1.5"], "sparsity.schedule.end=1.5 (fraction) is past the end of training"),
    (["sparsity=structured", "sparsity.schedule.unit=epoch", "sparsity.schedule.start=0", "sparsity.schedule.end=3",
      "trainer.max_epochs=2"], "past the end of training, trainer.max_epochs=2"),
    (["sparsity=structured", "sparsity.schedule.start=0.5", "sparsity.schedule.end=0.2"], "is before sparsity.schedule.start"),
    (["sparsity=structured", "sparsity.masked_layers=[-9]"], "sparsity.masked_layers=[-9]: [-9] outside the 2 blocks"),
    (["sparsity=structured", "sparsity.masked_layers=[0,2]"], "expected block indices in -2..1"),
    (["data.max_length=600"], "data.max_length=600 is longer than backbone 'minilm' reads: it has 512 positions"),
])
def test_train_cross_checks(extra, message):
    with pytest.raises(ConfigError) as e:
        check_options("train", _train(*extra))
    assert message in str(e.value)


def test_masked_layers_and_max_length_use_the_real_backbone_config():
    """MiniLM (6 blocks, 512 positions) from its config.json: no weights read."""
    cfg = composed("train", ["experiment=smoke", "sparsity=structured", "sparsity.masked_layers=[5]", "data.max_length=512"])
    check_options("train", cfg)
    with pytest.raises(ConfigError, match=r"\[6\] outside the 6 blocks of backbone 'minilm'"):
        check_options("train", composed("train", ["experiment=smoke", "sparsity=structured", "sparsity.masked_layers=[6]"]))


def test_set_with_two_values_for_one_concept():
    assert duplicate_keys("{food: Positive, food: Negative}") == ["food"]
    assert duplicate_keys("{food: [0.2, 0.8, 0.0], noise: unknown}") == [] and duplicate_keys("{food") == []
    cfg = composed("intervene", [f"ckpt_path={EXISTING_FILE}", "text=hi"])
    cfg.set = "{food: Positive, food: Negative}"  # set='...' quoted: a string the intervention parses
    with pytest.raises(ConfigError, match=r"set= gives 2 values for concept\(s\) \['food'\]"):
        check_options("intervene", cfg)


def test_set_duplicates_through_the_command_line(tmp_path, monkeypatch, capsys):
    """Unquoted, Hydra parses the mapping and keeps the last value: the raw override is checked."""
    from sparsecbm.intervene import main

    monkeypatch.setattr(sys, "argv", ["prog", f"ckpt_path={EXISTING_FILE}", "text=hi", "set={food: Positive, food: Negative}",
                                      f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == USER_ERROR_EXIT and "values for concept(s) ['food']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # the failed command left no folder


def test_annotate_refuses_to_overwrite_its_input(tmp_path):
    cfg = composed("annotate", [f"out_dir={TINY_DATA}", f"data.root={TINY_DATA}"])
    with pytest.raises(ConfigError, match="is the folder annotate reads .* would overwrite its input files"):
        check_options("annotate", cfg)
    cfg = composed("annotate", [f"out_dir={TINY_DATA}/../cebab_tiny"])  # the same folder, spelled differently
    cfg.data.root = str(TINY_DATA)
    with pytest.raises(ConfigError, match="would overwrite its input files"):
        check_options("annotate", cfg)


def test_busy_port_is_refused_before_loading(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        cfg = composed("serve", [f"ckpt_path={EXISTING_FILE}", f"port={busy.getsockname()[1]}"])
        with pytest.raises(ConfigError, match=r"cannot listen on 127.0.0.1:\d+ \(Address already in use\); pick another port"):
            check_options("serve", cfg)


def test_inference_max_length_against_the_checkpoint(tmp_path):
    """data.max_length above the checkpoint's backbone positions: refused from the stored config (mmap)."""
    import torch

    ckpt = tmp_path / "m.ckpt"
    hf = {"model_type": "bert", "max_position_embeddings": 64, "num_hidden_layers": 2}
    torch.save({"sparsecbm": {"format": 1, "backbone": {"hf_config": hf}}, "state_dict": {}}, ckpt)
    cfg = composed("intervene", [f"ckpt_path={ckpt}", "text=hi", "data.max_length=65"])
    with pytest.raises(ConfigError, match="data.max_length=65 is longer than the checkpoint's backbone reads: it has 64"):
        check_options("intervene", cfg)
    check_options("intervene", composed("intervene", [f"ckpt_path={ckpt}", "text=hi", "data.max_length=64"]))


def test_minilm_aliases_match_the_backbone_module():
    from sparsecbm.backbone_facts import MINILM_ALIASES
    from sparsecbm.models.backbone import MINILM_ALIASES as REAL

    assert MINILM_ALIASES == REAL


# ------------------------------------------------------------------------------------ through the commands
@pytest.mark.parametrize("argv,message", [
    (["train", "data.batch_size=0"], "data.batch_size=0 is not valid"),
    (["train", "model.optimizer.lr=-1e-3"], "model.optimizer.lr=-0.001 is not valid; expected a value > 0"),
    (["train", "seed=abc"], "seed='abc' is not valid; expected an integer"),
    (["train", "cbm.concept_loss_weight=-1"], "cbm.concept_loss_weight=-1 is not valid"),
    (["train", "data.limit.train=-1"], "data.limit.train=-1 is not valid; expected an integer >= 1 or null"),
    (["train", "model.select=foo"], "model.select='foo' is not valid; expected one of ['label', 'label+concept']"),
    (["explain", f"ckpt_path={EXISTING_FILE}", "n=-1"], "n=-1 is not valid; expected an integer >= 1"),
    (["intervene", f"ckpt_path={EXISTING_FILE}", "random_seeds=0"], "random_seeds=0 is not valid"),
    (["intervene", f"ckpt_path={EXISTING_FILE}", "mask_portion=1.5"], "mask_portion=1.5 is not valid"),
    (["intervene", f"ckpt_path={EXISTING_FILE}", "level=mask", "mask.examples=-1"], "mask.examples=-1 is not valid"),
])
def test_bad_options_through_the_commands(argv, message, tmp_path, monkeypatch, capsys):
    """The real entry point: exit 2, the message, and no run folder left behind."""
    import importlib

    main = importlib.import_module(f"sparsecbm.{argv[0]}").main
    extra = ["experiment=smoke", *TINY_BERT] if argv[0] == "train" else []
    monkeypatch.setattr(sys, "argv", ["prog", *argv[1:], *extra, f"hydra.run.dir={tmp_path / 'r'}"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == USER_ERROR_EXIT and message in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,message", [
    (["sparsecbm.train", "sparsity=structured", "sparsity.schedule.final_sparsity=1.5"],
     "sparsity.schedule.final_sparsity=1.5 is not valid; expected a value in [0, 1)"),
    (["sparsecbm.evaluate", "ckpt_path=/nonexistent/best.ckpt"], "checkpoint not found: /nonexistent/best.ckpt"),
    (["sparsecbm.intervene", f"ckpt_path={EXISTING_FILE}", "text=''"], "text='' is not valid; expected a non-empty text"),
])
def test_user_errors_come_before_torch(argv, message, tmp_path):
    """A real process: exit 2 with the message, and torch was never imported (so it answers in about a second)."""
    import os
    import subprocess

    code = ("import sys, runpy; sys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
            "finally:\n    print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)")
    args = [*argv, *(["experiment=smoke"] if argv[0] == "sparsecbm.train" else []), f"hydra.run.dir={tmp_path / 'r'}"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == USER_ERROR_EXIT, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "NO_TORCH" in proc.stderr
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------ property: any value
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.sampled_from([0, 1, -1, 2, 65535, 65536]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 0.5, -0.0, 1e-9]),
    st.text(max_size=6), st.sampled_from(["", "label", "cubic", "dev", "auto", "unknown", "true"]),
    st.lists(st.integers(-8, 8), max_size=3), st.lists(st.floats(-1, 2), max_size=2),
)
_BASES: dict[str, object] = {}


def _valid(option: Option, value) -> bool:
    """An independent reading of a declaration: is ``value`` valid? (paths and ports are left out)"""
    if value is None:
        return option.null
    items = value if option.each and isinstance(value, list) else [value]
    if option.kind == "text" and items == []:
        return False
    for v in items:
        is_int = isinstance(v, int) and not isinstance(v, bool)
        if option.kind == "seed":
            ok = is_int
        elif option.kind in ("int", "float"):
            number = is_int if option.kind == "int" else (is_int or (isinstance(v, float) and math.isfinite(v)))
            ok = number and (option.low is None or (v > option.low if option.low_open else v >= option.low)) \
                and (option.high is None or (v < option.high if option.high_open else v <= option.high))
        elif option.kind == "bool":
            ok = isinstance(v, bool)
        elif option.kind == "choice":
            ok = isinstance(v, str) and v in option.choices
        elif option.kind == "text":
            ok = isinstance(v, str) and v.strip() != ""
        else:
            return True
        if not ok:
            return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_of_any_option(data, tmp_path):
    """Whatever value a declared option gets, the schema accepts exactly the valid ones, and refuses the others with
    a ConfigError naming the option (never another exception)."""
    command = data.draw(st.sampled_from(["train", "intervene", "explain", "serve", "annotate", "bench"]))
    if command not in _BASES:
        _BASES[command] = composed(command, base_overrides(command, tmp_path))
    base = _BASES[command]
    candidates = [o for o in options(command) if o.kind not in ("file", "dir", "path", "outfile", "port")
                  and _value(base, o.key) is not _MISSING]
    option = data.draw(st.sampled_from(candidates))
    value = data.draw(ANY_VALUE)
    cfg = base.copy()
    try:
        OmegaConf.update(cfg, option.key, value, merge=False)
    except Exception:  # OmegaConf cannot hold it (e.g. a typed node): nothing a user could pass either
        return
    try:
        check_options(command, cfg, cross=False)
    except ConfigError as e:
        assert not _valid(option, value), f"{option.key}={value!r} refused: {e}"
        assert str(e).startswith(f"{option.key}=") or option.key in str(e)
        return
    assert _valid(option, value), f"{option.key}={value!r} accepted"

"""What the tests share: paths, the real config tree composed like the CLI does, and (in submodules) the
constructed models, data and callbacks several test files use. Tests import it as ``testkit`` (``tests`` is
the one pytest ``pythonpath`` entry); no test module imports another."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from sparsecbm.config import CONF_DIR, ROOT

__all__ = ["ACCELERATED", "CEBAB", "FIXTURES", "ROOT", "SHARED", "TINY_BERT", "TINY_DATA", "compose_cfg"]

FIXTURES = Path(__file__).parent.parent / "fixtures"
TINY_DATA = FIXTURES / "cebab_tiny"
SHARED = ROOT.parent / "shared" / "data"
CEBAB = SHARED / "cebab"
TINY_BERT = ["backbone=tiny_bert"]

#: Entry points with a top-level ``accelerator=auto|cpu|gpu`` option.
ACCELERATED = ("train", "evaluate", "intervene", "explain", "label_refit", "serve")


def compose_cfg(tmp_path: Path, overrides: list[str], config_name: str = "train"):
    """The real config tree, composed like the CLI does, writing into ``tmp_path``. Tests run on the CPU (the
    same numbers on every machine) unless they pass ``accelerator=`` (tests/test_gpu.py) or ``trainer=gpu``."""
    on_cpu = config_name in ACCELERATED and not any(o.startswith(("accelerator=", "trainer=")) for o in overrides)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(
            config_name,
            overrides=[
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                *(["callbacks.progress_bar=null"] if config_name == "train" else []),
                *(["accelerator=cpu"] if on_cpu else []),
                *overrides,
            ],
        )

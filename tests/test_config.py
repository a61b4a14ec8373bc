"""sparsecbm.config.hydra_entry_point: the one decorator an entry point needs (resolvers, quiet libraries)."""

from __future__ import annotations

import os
import sys

from omegaconf import OmegaConf

from sparsecbm.config import ROOT, hydra_entry_point, quiet_libraries, register_resolvers


def test_the_decorator_registers_resolvers_and_quiets_libraries(tmp_path, monkeypatch):
    OmegaConf.clear_resolver("sc.root")
    seen = {}

    @hydra_entry_point("train")
    def main(cfg):
        seen["progress_bars"] = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        seen["root"] = cfg.paths.root_dir  # ${sc.root:}
        return 0.5

    assert OmegaConf.has_resolver("sc.root")  # at decoration (import) time, before any call
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "argv", ["prog", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"])
    main()
    assert seen == {"progress_bars": "1", "root": str(ROOT)}


def test_the_earlier_pattern_still_works(tmp_path, monkeypatch):
    """An entry point that still calls register_resolvers() and quiet_libraries() itself (idempotent)."""
    register_resolvers()
    seen = []

    @hydra_entry_point("train")
    def main(cfg):
        quiet_libraries()
        seen.append(cfg.paths.root_dir)

    register_resolvers()
    monkeypatch.setattr(sys, "argv", ["prog", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"])
    main()
    assert seen == [str(ROOT)]

"""Real pretrained backbones from local folders: the ready configs, the messages for a wrong folder (exit 2,
before any model or tokenizer loads), the SmolLM2 LoRA targets beside structured masks, and the assembly
script's refusals (no download here: data/assemble_models.py fetches hundreds of MB, never in tests)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from testkit import ROOT, compose_cfg
from testkit.runs import call

from sparsecbm.errors import ConfigError
from sparsecbm.models.backbone import Backbone
from sparsecbm.models.source import check_model_source
from sparsecbm.sparsity import SubnetworkBackbone


def test_local_folder_messages(tmp_path):
    check_model_source("Qwen/Qwen2.5-0.5B")  # a hub name: from_pretrained answers for it
    check_model_source("minilm")
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "config.json").write_text("{}")
    check_model_source(str(tmp_path / "ok"))
    cases = {None: "backbone.name_or_path is not set", str(tmp_path / "nope"): "there is no such folder",
             str(tmp_path / "empty"): "is not a Hugging Face model folder: it has no config.json",
             str(tmp_path / "model.gguf"): "is a GGUF file: convert it once into a folder"}
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message) as e:
            check_model_source(path)
        assert "data/assemble_models.py" in str(e.value)


@pytest.mark.parametrize("backbone", ["smollm2_135m", "mpnet_base"])
def test_ready_configs_need_the_folder(tmp_path, monkeypatch, capsys, backbone):
    from sparsecbm.train import main

    argv = ["experiment=smoke", f"backbone={backbone}", f"hydra.run.dir={tmp_path / 'run'}"]
    err = call(main, argv, monkeypatch, capsys)
    assert "backbone.name_or_path is not set" in err and "assemble_models.py" in err
    err = call(main, [*argv, f"backbone.name_or_path={tmp_path}"], monkeypatch, capsys)
    assert f"backbone.name_or_path={tmp_path} is not a Hugging Face model folder" in err


def test_ready_configs_compose():
    cfg = compose_cfg(ROOT / "unused", ["backbone=smollm2_135m", "backbone.name_or_path=/m/smollm2"])
    assert (cfg.backbone.pooling, cfg.backbone.tokenizer, cfg.backbone.lora.r) == ("last", "/m/smollm2", 8)
    cfg = compose_cfg(ROOT / "unused", ["backbone=mpnet_base", "backbone.name_or_path=/m/mpnet"])
    assert cfg.backbone.pooling == "mean" and cfg.backbone.lora is None


def test_smollm2_lora_targets_leave_the_structured_blocks_free():
    """The shipped SmolLM2 LoRA targets on a 30-block GQA Llama (tiny widths): adapters on the attention of
    blocks 0-27, structured masks (heads and neurons) on blocks 28-29, no conflict; the default targets conflict."""
    cfg = compose_cfg(ROOT / "unused", ["backbone=smollm2_135m", "backbone.name_or_path=/m/smollm2"])
    shape = {"model_type": "llama", "vocab_size": 64, "hidden_size": 18, "num_hidden_layers": 30,
             "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 24}
    torch.manual_seed(0)
    lora = dict(cfg.backbone.lora)
    bb = Backbone("minilm", pooling="last", pretrained=False, config=shape, lora=lora)
    adapted = {n.split(".")[1] for n, _ in bb.model.named_parameters() if "lora_A" in n}
    assert adapted == {str(i) for i in range(28)}
    sb = SubnetworkBackbone(bb, 4, granularity="structured", masked_layers=[-2, -1])
    assert sb.blocks == [28, 29] and len(sb.unit_groups()) == 4
    plain = Backbone("minilm", pooling="last", pretrained=False, config=shape, lora={"r": 4})
    with pytest.raises(ValueError, match="carry LoRA adapters"):
        SubnetworkBackbone(plain, 4, granularity="structured", masked_layers=[-2, -1])


def _assemble():
    spec = importlib.util.spec_from_file_location("assemble_models", ROOT / "data" / "assemble_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["assemble_models"] = module
    spec.loader.exec_module(module)
    return module


def test_assembly_refuses_the_repository_and_skips_what_exists(tmp_path, capsys):
    assemble = _assemble()
    assert assemble.main([str(ROOT / "models")]) == 2
    assert "is inside the repository" in capsys.readouterr().err
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "config.json").write_text("{}")
    assert assemble.main([str(tmp_path), "--models", "mpnet"]) == 0  # present: nothing downloaded
    assert "exists: skipped" in capsys.readouterr().out
    assert set(assemble.RECIPES) == {"mpnet", "smollm2", "gemma3"}

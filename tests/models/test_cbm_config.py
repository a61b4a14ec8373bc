"""The ``cbm`` constructor config: every conf/cbm file builds a CBMConfig, command-line overrides reach it,
and the flat form a checkpoint stores (also the one written before conf/cbm had a ``_target_``) reads back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sparsecbm.config import CONF_DIR
from sparsecbm.models.cbm_config import CBMConfig

CBM_FILES = sorted(p.stem for p in (Path(CONF_DIR) / "cbm").glob("*.yaml"))
# the flat `cbm` a checkpoint stored before this config had a _target_ (cbm=strict)
OLD_STRICT = {"mode": "independent", "activation": "hard", "embedding_dim": 16, "label_head": "linear", "mlp_hidden": 64,
              "dropout": 0.1, "concept_loss_weight": 1.0, "concept_class_weight": "balanced",
              "label_class_weight": "none", "label_epochs": 0, "train_intervention_prob": 0.0, "residual_dim": 0,
              "residual_penalty": 1.0, "residual_drop_prob": 0.0, "tokens": "attention", "token_budget": 0.2,
              "token_penalty": 1.0, "token_init_open": 1.0, "label_sparsity": "none", "label_l1": 1.0e-3,
              "label_topk": 2}


def test_conf_cbm_lists_every_option_and_the_python_defaults_match_joint(cfg_factory):
    assert set(CBM_FILES) >= {"cem", "hybrid", "independent", "joint", "sequential", "standard", "strict"}
    joint = cfg_factory(["cbm=joint"]).cbm
    fields = {f.name for f in dataclasses.fields(CBMConfig)}
    assert set(joint) - {"_target_"} == fields  # every option is overridable as cbm.<name>=...
    assert instantiate(joint) == CBMConfig()  # the YAML states the Python defaults


@pytest.mark.parametrize("name", CBM_FILES)
def test_every_cbm_file_builds_its_config(cfg_factory, name):
    cfg = cfg_factory([f"cbm={name}"]).cbm
    built = instantiate(cfg)
    assert isinstance(built, CBMConfig)
    plain = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
    assert built == CBMConfig(**plain) and built.mode == plain["mode"]


def test_overrides_reach_the_built_config_and_the_module(cfg_factory):
    cfg = cfg_factory(["cbm=strict", "cbm.train_intervention_prob=0.5", "cbm.tokens=gates", "cbm.label_epochs=2"])
    built = instantiate(cfg.cbm)
    assert (built.mode, built.activation, built.train_intervention_prob, built.tokens, built.label_epochs) == (
        "independent", "hard", 0.5, "gates", 2)
    assert instantiate(cfg_factory(["+bottleneck_row=soft_logits"]).cbm).concept_class_weight == "balanced"


def test_the_flat_checkpoint_form_reads_back():
    old = CBMConfig.coerce(OLD_STRICT)
    assert old == CBMConfig(mode="independent", activation="hard", tokens="attention", concept_class_weight="balanced")
    nulls = CBMConfig.coerce({**OLD_STRICT, "residual_dim": None, "label_sparsity": None, "tokens": None})
    assert (nulls.residual_dim, nulls.label_sparsity, nulls.tokens) == (0, "none", "none")  # YAML null means off
    assert CBMConfig.coerce(old.to_dict()) == old and CBMConfig.coerce(old) is old
    assert CBMConfig.coerce({"_target_": "sparsecbm.models.cbm_config.CBMConfig", "mode": "standard"}).mode == "standard"
    assert CBMConfig.coerce(None) == CBMConfig()
    with pytest.raises(ValueError, match=r"unknown cbm option\(s\) \['tokens_kept'\]"):
        CBMConfig.coerce({"tokens_kept": 0.2})
    with pytest.raises(ValueError, match="label_class_weight='inverse' is not valid"):
        CBMConfig(label_class_weight="inverse")

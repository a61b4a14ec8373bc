"""Every path on an accelerator: training (each CBM mode, each sparsity, a GQA decoder with LoRA), concept-,
level- and mask-level interventions, the explorer's API, evaluate, explain and the bench.

Each test runs twice. ``cuda`` (marker ``gpu``, skipped without CUDA) trains and serves on the GPU with
``trainer=gpu`` (bf16-mixed), and a callback asserts that every parameter and batch tensor is on CUDA at every
training step. ``cpu`` runs in the normal suite under :class:`device_sim.SimulatedDevice`, a model of CUDA's
device rules on the CPU: a tensor made without ``device=`` (the two crashes of issue 25) fails it there too.
``test_gpu_outputs_match_cpu`` compares one checkpoint's GPU and CPU outputs.
"""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch
from device_sim import SimulatedDevice
from testkit import TINY_BERT, compose_cfg

from sparsecbm.session import InferenceSession
from sparsecbm.train import train

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]
SMALL = ["experiment=smoke", "data.limit={train: 16, dev: 16, test: 16}", "callbacks.model_checkpoint.save_top_k=1"]
TEXT = "The pasta was cold but the waiter was lovely."


def on(device: str, session: bool = False):
    """cpu: every torch call checked by the simulated accelerator (an inference session built with the device
    string "cpu" plays the GPU's part); cuda: the real GPU."""
    return SimulatedDevice(as_device="cpu" if session else None) if device == "cpu" else nullcontext()


def placed(device: str) -> list[str]:
    """Overrides that train on ``device`` and check it at every step (bf16 autocast on the GPU)."""
    run = ["accelerator=cpu"] if device == "cpu" else ["trainer=gpu"]
    return [*run, f"+callbacks.on_device={{_target_: device_sim.OnDevice, device: {device}}}"]


def checked_train(tmp_path, device: str, overrides: list[str]):
    with on(device):
        result, objects = train(compose_cfg(tmp_path, [*SMALL, *TINY_BERT, *placed(device), *overrides]))
    seen = [c for c in objects["trainer"].callbacks if type(c).__name__ == "OnDevice"]
    assert seen and seen[0].steps == objects["trainer"].global_step > 0  # checked at every step
    return result, objects


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cbm", ["standard", "joint", "independent", "sequential", "strict", "hybrid", "cem"])
def test_every_cbm_mode_trains_on_the_device(tmp_path, device, cbm):
    extra = ["trainer.max_epochs=2", "cbm.label_epochs=1"] if cbm == "sequential" else []
    result, _ = checked_train(tmp_path, device, [f"cbm={cbm}", "test=false", *extra])
    assert 0 <= result["val"]["label"]["acc"] <= 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sparsity", ["structured", "neuron", "head", "obert", "movement", "fisher"])
def test_every_sparsity_trains_on_the_device(tmp_path, device, sparsity):
    """The pruning schedule (scores, masks) on the device; structured also tests, with the analyses after
    testing (interventions, leakage, cross-mask) on the training device, under bf16 autocast on the CPU too."""
    extra = ["test=false"] if sparsity != "structured" else ["+trainer.precision=bf16-mixed"] * (device == "cpu")
    result, objects = checked_train(tmp_path, device, [f"sparsity={sparsity}", "sparsity.schedule.every=1", *extra])
    sb = objects["module"].model.backbone
    assert sb.at_final_sparsity() and next(sb.parameters()).device.type == device
    assert all(abs(s - sb.final_sparsity) < 0.05 for s in sb.sparsity().values())
    if sparsity == "structured":
        assert len(result["subnetworks"]["cross_mask"]) == 4 and result["test"]["intervention"]["n_examples"] == 16


@pytest.mark.parametrize("device", DEVICES)
def test_gqa_decoder_with_lora_and_structured_masks_on_the_device(tmp_path, device):
    result, objects = checked_train(tmp_path, device, ["backbone=tiny_decoder", "sparsity=structured",
                                                       "sparsity.schedule.every=1"])
    sb = objects["module"].model.backbone
    assert sb.model.config.num_key_value_heads < sb.model.config.num_attention_heads and sb.lora
    assert sb.at_final_sparsity() and all(len(v) == 2 for v in
                                          result["subnetworks"]["concepts"]["food"]["kv_heads_kept"].values())


@pytest.mark.parametrize("device", DEVICES)
def test_counterfactual_and_teacher_terms_on_the_device(tmp_path, device):
    """cbm.counterfactual_weight (partners drawn on the host, the interchange loss on the device) and cbm.teacher
    (a black box's label distributions kept on the host, read per batch) train on the device; then one
    full-split batch, where partners exist, through the module's training losses."""
    checked_train(tmp_path / "teacher", device, ["cbm=standard", "test=false"])
    teacher = tmp_path / "teacher" / "checkpoints" / "best.ckpt"
    _, objects = checked_train(tmp_path / "student", device, [
        "data.limit={train: 80, dev: 16, test: 16}", "cbm=cem", "cbm.counterfactual_weight=1.0",
        f"cbm.teacher={teacher}", "test=false"])
    module, target = objects["module"], torch.device(device)
    batch = next(iter(objects["datamodule"].loader("train", batch_size=80)))
    with on(device):
        module.to(target)  # Lightning moved it back to the CPU at the end of fit
        batch = {k: v.to(target) for k, v in batch.items()}
        _, parts, _ = module.training_losses(batch)
    assert module.counterfactual_terms.teacher.shape == (len(objects["datamodule"].raw["train"]), 5)
    assert {"task", "concept", "counterfactual"} <= set(parts) and parts["counterfactual"].item() > 0


@pytest.fixture(scope="module", params=DEVICES)
def graded_sparse(request, tmp_path_factory, annotated):  # noqa: F811
    """A structured SparseCBM with a graded concept (food_grade), trained on the device."""
    device, out = request.param, tmp_path_factory.mktemp(f"graded_{request.param}")
    with on(device):
        train(compose_cfg(out, [*SMALL, *TINY_BERT, *placed(device), "data=annotated", f"data.root={annotated}",
                                "sparsity=structured", "sparsity.schedule.final_sparsity=0.5",
                                "sparsity.schedule.every=1"]))
    return device, out / "checkpoints" / "best.ckpt", annotated


def accel(device: str) -> str:
    return "cpu" if device == "cpu" else "gpu"


def test_concept_level_and_mask_interventions_on_the_device(graded_sparse, tmp_path):
    from sparsecbm.intervene import run as intervene

    device, ckpt, data = graded_sparse
    base = [f"ckpt_path={ckpt}", f"accelerator={accel(device)}"]
    with on(device, session=True):
        res = intervene(compose_cfg(tmp_path / "one", [*base, f"text='{TEXT}'",
                                                       "set={food_grade: 4, staff: Negative}"], "intervene"))
        curve = intervene(compose_cfg(tmp_path / "curve", [*base, f"data.root={data}", "random_seeds=1"], "intervene"))
        mask = intervene(compose_cfg(tmp_path / "mask", [*base, f"data.root={data}", "level=mask", "mask.examples=4",
                                                         "mask.holdout=4", "mask_portion=0.2"], "intervene"))
    assert res.after.concepts["food_grade"] == "4" and res.after.concepts["staff"] == "Negative"  # a level, a value
    assert curve.n_examples == 16 and set(curve.curves) == {"random", "uncertainty", "influence", "oracle"}
    for r in mask["results"].values():
        assert r["examples"] == 4 and r["ms_per_intervened_concept"] is None or r["ms_per_intervened_concept"] > 0


def test_explorer_api_on_the_device(graded_sparse):
    from fastapi.testclient import TestClient

    from sparsecbm.interpret.causal_model import CausalModel, counterfactual_effect
    from sparsecbm.serve import Explorer
    from sparsecbm.serve.app import create_app

    device, ckpt, _ = graded_sparse
    session = InferenceSession.from_checkpoint(ckpt, accelerator=accel(device))
    explorer = Explorer(session, session.datamodule())
    assert next(explorer.model.parameters()).device.type == device
    with on(device, session=True):  # in this thread (the HTTP handlers below run in a worker thread)
        direct = [explorer.predict(text=TEXT), explorer.intervene({"food_grade": 2}, text=TEXT),
                  explorer.mask_intervene("food", "Positive", text=TEXT, portion=0.2)]
        job = explorer.split_pass()
        job._run()  # the Dataset view's background pass, here in this thread (the simulation is per thread)
        assert job.status == "done", job.error
        dataset, curves, subnetworks = explorer.dataset(), explorer.curves(), explorer.subnetworks()
        causal = CausalModel(session)  # the counterfactual panel's adapter (issue 29)
        effect = counterfactual_effect(causal, TEXT, TEXT.replace("cold", "delicious"), "food", "Positive")
        mask_probs = causal.mask_edit_probs([TEXT, TEXT], ["food", "staff"], ["Positive", "Negative"], 0.2, True)
    assert len(effect["intervened"]) == len(effect["labels"]) == 5 and mask_probs.shape == (2, 5)
    assert dataset["n"] == 16 and set(dataset["concepts"]) == set(session.concept_set.names)
    assert curves["n_examples"] == 16 and subnetworks["available"]
    client = TestClient(create_app(explorer))
    answers = [client.post("/api/predict", json={"text": TEXT}),
               client.post("/api/intervene", json={"text": TEXT, "set": {"food_grade": 2}}),
               client.post("/api/intervene/mask", json={"text": TEXT, "concept": "food", "value": "Positive",
                                                        "portion": 0.2})]
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert answers[0].json()["label_probs"] == direct[0]["label_probs"]
    assert answers[1].json()["after"]["label_probs"] == direct[1]["after"]["label_probs"]
    edit = answers[2].json()["edit"]
    assert edit["swapped"] == direct[2]["edit"]["swapped"] > 0
    assert edit["sparsity_after"] == pytest.approx(edit["sparsity_before"])


def test_evaluate_and_explain_on_the_device(graded_sparse, tmp_path):
    from sparsecbm.evaluate import evaluate
    from sparsecbm.explain import run as explain
    from sparsecbm.label_refit import run as label_refit

    device, ckpt, data = graded_sparse
    base = [f"ckpt_path={ckpt}", f"accelerator={accel(device)}", f"data.root={data}"]
    with on(device, session=True):
        result = evaluate(compose_cfg(tmp_path / "eval", base, "evaluate"))
        for method in ("ours", "lig", "ablation"):
            explain(compose_cfg(tmp_path / method, [*base, "n=2", f"method={method}", "attribution.n_steps=4"],
                                "explain"))
        explain(compose_cfg(tmp_path / "faith", [*base, "n=2", "explanations=false", "faithfulness=true",
                                                 "methods=[ours,saliency]", "concepts=round_robin",
                                                 "attribution.n_steps=4"], "explain"))
        refits = label_refit(compose_cfg(tmp_path / "refit", [*base, "topk=[1]", "l1=[]", "steps=3"], "label_refit"))
    assert result["test"]["label"]["acc"] >= 0 and result["subnetworks"]["concepts"]
    saved = json.loads((tmp_path / "lig" / "explanations.json").read_text())
    assert len(saved["explanations"]) == 2
    faith = json.loads((tmp_path / "faith" / "faithfulness.json").read_text())
    assert {row["examples"] for row in faith["table"].values()} == {2}
    assert set(refits) == {"checkpoint (no refit)", "dense refit", "topk k=1 refit"}


@pytest.mark.parametrize("device", DEVICES)
def test_bench_quick_on_the_device(tmp_path, device):
    from sparsecbm.bench import run

    with on(device):
        result = run(compose_cfg(tmp_path, ["quick=true", f"accelerator={accel(device)}"], "bench"))
    assert result["device"] == device and result["configs"]["sparse_default"]["intervention"]["mask_level_s"] > 0
    peak = result["configs"]["sparse_default"]["train"]["peak_cuda_bytes"]
    assert (peak is None) if device == "cpu" else (peak > 0)
    assert set(result["k_scaling"]) == {"K=1", "K=4"} and result["targets"] == []


@pytest.mark.gpu
def test_gpu_outputs_match_cpu(graded_sparse):
    """One checkpoint on both devices: float32 outputs equal to rounding, bf16 autocast within bf16's precision,
    and the mask-level edit alike."""
    from sparsecbm.sparsity.mask_editing import MaskEditor

    device, ckpt, _ = graded_sparse
    if device != "cuda":
        pytest.skip("compares the GPU-trained checkpoint")
    gpu = InferenceSession.from_checkpoint(ckpt, accelerator="gpu")
    cpu = InferenceSession.from_checkpoint(ckpt, accelerator="cpu")
    texts = [TEXT, "Lovely staff, great wine, but so loud we could not talk."]
    with torch.no_grad():
        a = gpu.model(*gpu.tokenize(texts)[0].values())
        b = cpu.model(*cpu.tokenize(texts)[0].values())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            c = gpu.model(*gpu.tokenize(texts)[0].values())
    torch.testing.assert_close(a.label_logits.float().cpu(), b.label_logits, atol=1e-4, rtol=1e-4)
    for x, y, z in zip(a.concept_logits, b.concept_logits, c.concept_logits):
        torch.testing.assert_close(x.float().cpu(), y, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(z.float().softmax(-1).cpu(), y.softmax(-1), atol=3e-2, rtol=0)
    edits = []
    for session in (gpu, cpu):
        batch = session.tokenize([TEXT])[0]
        edits.append(MaskEditor(session.model, 0.2).intervene(0, batch["input_ids"], batch["attention_mask"], 1))
    assert edits[0].swapped == edits[1].swapped and edits[0].per_layer == edits[1].per_layer  # counts: exact
    # which units swap follows gradients equal to rounding (a near-tie may pick another unit): close, not equal
    assert edits[0].before_probs == pytest.approx(edits[1].before_probs, abs=1e-4)
    assert edits[0].after_probs == pytest.approx(edits[1].after_probs, abs=5e-2)

"""Device hygiene, checked on the CPU: every tensor the package makes is on the model's device.

1. A static check over ``sparsecbm/``: every tensor factory call (``torch.zeros/ones/full/empty/arange/tensor/
   as_tensor/eye/rand*/linspace/randperm/Generator/from_numpy``) passes ``device=``, feeds a parameter or a
   buffer (they move with their module), or sits in a function of :data:`HOST_SIDE` with the reason it lives
   on the host; and every ``.numpy()`` is of a ``.cpu()`` tensor or of host data.
2. :class:`device_sim.SimulatedDevice` (a model of CUDA's device rules on the CPU) catches the known GPU
   crashes of today's main in code written like them, so the suite in tests/test_gpu.py can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from device_sim import DeviceMismatch, OnDevice, SimulatedDevice, mark_host

PACKAGE = Path(__file__).resolve().parents[1] / "sparsecbm"
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "tensor", "as_tensor", "eye", "rand", "randn", "randint",
             "randperm", "linspace", "Generator", "from_numpy"}
#: (file under sparsecbm/, function or "*" for the whole module) -> why its tensors belong on the host.
HOST_SIDE = {
    ("data/datamodule.py", "__call__"): "the collator builds host batches; Lightning moves them to the device",
    ("data/datamodule.py", "__iter__"): "the sampler's order: a CPU generator, the same on every device",
    ("data/datamodule.py", "loader"): "the loader's shuffling generator (CPU, device-independent)",
    ("callbacks/pruning.py", "_batches"): "score-batch order from a CPU generator (the same masks on any "
                                          "device); the batches are moved with transfer_batch_to_device",
    ("interpret/policies.py", "scores"): "policies rank host copies of the concept outputs (Bottleneck)",
    ("interpret/policies.py", "entropy_uncertainty"): "host copies of the concept outputs (Bottleneck)",
    ("interpret/policies.py", "ordinal_uncertainty"): "host copies of the concept outputs (Bottleneck)",
    ("interpret/intervention.py", "edit_targets"): "targets for the Bottleneck's host copies (moved to the "
                                                   "label head's device in Bottleneck.label_logits)",
    ("models/bottleneck.py", "target"): "HardValue / SoftValue targets for the Bottleneck's host copies",
    ("interpret/curves.py", "intervention_curve"): "a table of numbers for the report",
    ("sparsity/specificity.py", "cross_mask"): "a K x K table of macro-F1 values computed from host predictions",
    ("sparsity/subnetwork_stats.py", "export_masks"): "bit-packed masks written to a file",
    ("sparsity/subnetwork_stats.py", "load_masks"): "masks read from a file",
    ("sparsity/pruning.py", "_keep_by_weight"): "a greedy walk on the host; the mask returns to the scores' device",
    ("lit/losses.py", "balanced_class_weights"): "counted on the host from the training labels, then .to(device)",
    ("lit/losses.py", "log_prior"): "counted on the host from the training labels; task_loss moves it to the logits",
    ("sparsity/scorers.py", "random_scores"): "the random control's scores from a CPU generator (the same masks on "
                                              "any device), handed out on the masks' device by RandomScorer",
    ("metrics.py", "_as_classes"): "metrics of host predictions (lists, NumPy)",
    ("timing.py", "_pad"): "pads a host batch before the bench moves it to the device",
    ("annotate/llm.py", "collate"): "the padded host batch, moved with .to(self.device)",
    ("lit/counterfactual.py", "__init__"): "the training split's true values, a host lookup table of partners",
    ("lit/counterfactual.py", "sample"): "partner draws on the host from a CPU generator (the same on any device)",
    ("lit/counterfactual.py", "consistency"): "the CPU generator of the partner draws (the same on any device)",
    ("lit/counterfactual.py", "teacher_probs"): "the teacher's outputs kept on the host, indexed per batch and "
                                                "moved to the logits' device in teacher_loss",
    ("interpret/causal_model.py", "label_probs"): "an empty result on the host (outputs are CPU copies)",
    ("interpret/causal_model.py", "one_hot"): "targets for the Bottleneck's host copies",
    ("interpret/causal_model.py", "mask_edit_probs"): "an empty result on the host (outputs are CPU copies)",
    ("interpret/causal_explainers.py", "*"): "the explainers compare host copies (Bottleneck, CPU label probs)",
    ("interpret/icace.py", "*"): "ICaCE errors of host label distributions (a table of numbers)",
}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _function(node: ast.AST, parents) -> str:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node.name
    return "<module>"


def _feeds_a_module(node: ast.AST, parents) -> bool:
    """``register_buffer(name, torch.zeros(...))`` or ``nn.Parameter(torch.zeros(...))``: moved with the module."""
    parent = parents.get(node)
    while isinstance(parent, (ast.BinOp, ast.UnaryOp)):  # nn.Parameter(torch.randn(...) / scale)
        parent = parents.get(parent)
    if not isinstance(parent, ast.Call):
        return False
    name = parent.func.attr if isinstance(parent.func, ast.Attribute) else getattr(parent.func, "id", "")
    return name in ("register_buffer", "Parameter")


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = _parents(tree)
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            f, where = node.func, f"sparsecbm/{rel}:{node.lineno} ({_function(node, parents)})"
            if (rel, _function(node, parents)) in HOST_SIDE or (rel, "*") in HOST_SIDE:
                continue
            if isinstance(f.value, ast.Name) and f.value.id == "torch" and f.attr in FACTORIES:
                if not any(k.arg == "device" for k in node.keywords) and not _feeds_a_module(node, parents):
                    out.append(f"{where}: torch.{f.attr}(...) without device=")
            elif f.attr == "numpy" and not node.args and ".cpu()" not in ast.unparse(f.value):
                out.append(f"{where}: {ast.unparse(f.value)}.numpy() without .cpu()")
    return out


def test_every_tensor_factory_names_its_device():
    assert violations() == []


def test_the_static_check_finds_what_it_looks_for(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import torch\n"
        "def score(x):\n"
        "    s = torch.zeros(3)\n"                        # flagged
        "    t = torch.tensor([1], device=x.device)\n"    # fine
        "    return x.detach().numpy(), s.cpu().numpy()\n"  # the first is flagged
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        self.register_buffer('m', torch.ones(2))\n"  # fine: moves with the module
    )
    found = violations(tmp_path)
    assert len(found) == 2 and "bad.py:3 (score): torch.zeros" in found[0] and "x.detach().numpy()" in found[1]
    for file, _ in HOST_SIDE:  # the allowlist names real files
        assert (PACKAGE / file).is_file(), file


def test_simulated_device_catches_both_crashes_of_issue_25():
    """scorers.py (a score table made without device=, then += a gradient) and intervention.py (a CPU target
    for the GPU logits' cross-entropy), written as they were; and passes the fixed versions."""
    layer = torch.nn.Linear(4, 3)  # made before the simulation: "on the device"
    grad, x = layer.weight.sum(0), torch.randn(1, 4)
    with pytest.raises(DeviceMismatch, match="add_: host"), SimulatedDevice():
        scores = torch.zeros(4, dtype=torch.float64)
        scores += grad.double()
    with pytest.raises(DeviceMismatch, match="cross_entropy: host"), SimulatedDevice():
        F.cross_entropy(layer(x), torch.tensor([1]))
    with SimulatedDevice():  # fixed
        scores = torch.zeros(4, dtype=torch.float64, device=grad.device)
        scores += grad.double()
        logits = layer(torch.randn(1, 4, device=layer.weight.device))
        F.cross_entropy(logits, torch.tensor([1]).to(logits.device))
        host = mark_host(torch.ones(2))  # a host batch reaching the model is caught too
    with pytest.raises(DeviceMismatch, match="linear: host"), SimulatedDevice():
        layer(host.expand(1, 2).repeat(1, 2))
    with pytest.raises(DeviceMismatch, match="numpy"), SimulatedDevice():
        layer.weight.detach().numpy()


def test_on_device_callback_flags_wrong_devices_and_host_tensors():
    """tests/test_gpu.py's training check: a parameter off the device, or (simulated) a batch tensor the
    loader made that never moved, fails the step; a moved batch passes and is counted."""
    module = torch.nn.Linear(2, 2)
    cb = OnDevice("cpu")
    with SimulatedDevice():
        moved = torch.ones(2, 2).to(torch.device("cpu"))  # what Lightning's transfer does
        cb.on_train_batch_start(None, module, {"input_ids": moved, "index": [0, 1]}, 0)
        with pytest.raises(AssertionError, match=r"batch tensors not on cpu.*\(host\)"):
            cb.on_train_batch_start(None, module, {"input_ids": torch.ones(2, 2)}, 0)
    assert cb.steps == 1
    with pytest.raises(AssertionError, match="parameters not on cuda during training: \\['weight', 'bias'\\]"):
        OnDevice("cuda").on_train_batch_start(None, module, {}, 0)
    with pytest.raises(ValueError, match="cpu or cuda"):
        OnDevice("gpu")

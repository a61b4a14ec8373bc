"""The concept-intervention API (``sparsecbm.intervention``), re-exported from :mod:`sparsecbm.interpret`."""

from sparsecbm.interpret.curves import (
    CurvePoint,
    InterventionCurve,
    collect,
    ground_truth_effect,
    intervention_curve,
)
from sparsecbm.interpret.intervention import (
    Edit,
    InterventionError,
    InterventionResult,
    Prediction,
    ground_truth_edits,
    intervene,
    parse_set,
)
from sparsecbm.interpret.policies import POLICIES, get_policy
from sparsecbm.interpret.strategies import STRATEGIES, Bottleneck

__all__ = [
    "POLICIES", "STRATEGIES", "Bottleneck", "CurvePoint", "Edit", "InterventionCurve", "InterventionError",
    "InterventionResult", "Prediction", "collect", "get_policy", "ground_truth_edits", "ground_truth_effect",
    "intervene", "intervention_curve", "parse_set",
]

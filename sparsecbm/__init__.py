"""sparsecbm: sparse concept-bottleneck language models that explain themselves."""

from sparsecbm.checkpoint import InferenceSession, load_checkpoint
from sparsecbm.concepts import ConceptSet, ConceptSpec, LabelSpec
from sparsecbm.interpret.curves import InterventionCurve, intervention_curve
from sparsecbm.interpret.intervention import InterventionError, InterventionResult, intervene

__version__ = "0.1.0"
__all__ = [
    "ConceptSet", "ConceptSpec", "InferenceSession", "InterventionCurve", "InterventionError", "InterventionResult", "LabelSpec",
    "intervene", "intervention_curve", "load_checkpoint", "__version__",
]

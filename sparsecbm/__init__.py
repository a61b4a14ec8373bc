"""sparsecbm: sparse concept-bottleneck language models that explain themselves.

The public names are imported on first use (PEP 562), so a command that stops at a user error (a bad
option, data that cannot be found) answers before torch and Lightning are loaded.
"""

from sparsecbm.lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {
    "ConceptSet": "sparsecbm.concepts", "ConceptSpec": "sparsecbm.concepts", "LabelSpec": "sparsecbm.concepts",
    "InferenceSession": "sparsecbm.checkpoint", "load_checkpoint": "sparsecbm.checkpoint",
    "InterventionCurve": "sparsecbm.interpret.curves", "intervention_curve": "sparsecbm.interpret.curves",
    "InterventionResult": "sparsecbm.interpret.intervention", "intervene": "sparsecbm.interpret.intervention",
    "InterventionError": "sparsecbm.errors", "DataError": "sparsecbm.errors", "ConfigError": "sparsecbm.errors",
    "CheckpointError": "sparsecbm.errors", "SparseCBMError": "sparsecbm.errors",
    "RunResult": "sparsecbm.run_result",
}
__all__ = [*sorted(_EXPORTS), "__version__"]
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)

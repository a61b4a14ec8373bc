"""sparsecbm: sparse concept-bottleneck language models that explain themselves.

The public names are imported on first use (PEP 562), so a command that stops at a user error (a bad
option, data that cannot be found) answers before torch and Lightning are loaded.

Example:
    >>> import sparsecbm
    >>> session = sparsecbm.load("outputs/train/runs/<run>/checkpoints/best.ckpt")
    >>> sparsecbm.intervene(session, "The pasta was cold.", {"food": "Positive"}).changed()
"""

from sparsecbm.lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {
    "ConceptSet": "sparsecbm.concepts", "ConceptSpec": "sparsecbm.concepts", "LabelSpec": "sparsecbm.concepts",
    "CheckpointMeta": "sparsecbm.checkpoint", "load_model": "sparsecbm.checkpoint",
    "InferenceSession": "sparsecbm.session", "load": "sparsecbm.session",
    "InterventionCurve": "sparsecbm.interpret.curves", "intervention_curve": "sparsecbm.interpret.curves",
    "InterventionResult": "sparsecbm.interpret.intervention", "intervene": "sparsecbm.interpret.intervention",
    "parse_set": "sparsecbm.interpret.intervention", "Edit": "sparsecbm.interpret.intervention",
    "ExplanationSet": "sparsecbm.interpret.explanation",
    "InterventionError": "sparsecbm.errors", "DataError": "sparsecbm.errors", "ConfigError": "sparsecbm.errors",
    "CheckpointError": "sparsecbm.errors", "SparseCBMError": "sparsecbm.errors",
    "RunResult": "sparsecbm.run_result",
}
__all__ = [*sorted(_EXPORTS), "__version__"]
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)

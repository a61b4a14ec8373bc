"""Interpretation tools: concept interventions (policies x strategies), per-concept token attributions,
faithfulness metrics, leakage reports, explanation results and reports. Every function takes the model
(:class:`~sparsecbm.models.cbm.ConceptBottleneckModel`) or an :class:`~sparsecbm.session.InferenceSession`.

Example:
    >>> import sparsecbm
    >>> from sparsecbm.interpret import intervene
    >>> session = sparsecbm.load("outputs/train/runs/<run>/checkpoints/best.ckpt")
    >>> intervene(session, "The pasta was cold.", {"food": "Positive"}).changed()
"""

from sparsecbm.lazy import lazy_exports

_EXPORTS = {
    "intervene": "sparsecbm.interpret.intervention", "intervene_outputs": "sparsecbm.interpret.intervention",
    "parse_set": "sparsecbm.interpret.intervention", "InterventionResult": "sparsecbm.interpret.intervention",
    "intervention_curve": "sparsecbm.interpret.curves", "InterventionCurve": "sparsecbm.interpret.curves",
    "explain_batch": "sparsecbm.interpret.explainer", "explanation_set": "sparsecbm.interpret.explainer",
    "ExplanationSet": "sparsecbm.interpret.explanation", "get_method": "sparsecbm.interpret.attribution",
    "split_report": "sparsecbm.interpret.leakage", "bottleneck_report": "sparsecbm.interpret.leakage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)

"""Interpretation tools: concept interventions (policies x strategies), per-concept token attributions,
faithfulness metrics, explanation results and reports."""

"""Explanations: per-concept token attributions, faithfulness metrics, explanation results and reports."""

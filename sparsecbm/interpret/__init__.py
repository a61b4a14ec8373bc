"""Interpretation tools: concept interventions (policies x strategies)."""

"""Guardrails: measure both arms, judge the core against legacy, trip the kill switch."""

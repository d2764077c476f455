"""Guardrails: limits on what goes in, personal data and injection filters, output checks."""

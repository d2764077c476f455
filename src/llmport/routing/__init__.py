"""Choosing where a request goes: deployments, strategies, retries, fallbacks."""

"""Observability: subscribers to the events the gateway emits. No policy imports these."""

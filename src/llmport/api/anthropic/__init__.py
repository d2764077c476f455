"""The Anthropic Messages API surface: ``POST /v1/messages`` and ``/v1/messages/count_tokens``."""

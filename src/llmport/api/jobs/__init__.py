"""``/v1/files`` and ``/v1/batches``: FastAPI routes (not on the hot path)."""

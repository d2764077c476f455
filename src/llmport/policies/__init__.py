"""Pipeline policies: each one concern, each the same shape (see gateway/pipeline.py)."""

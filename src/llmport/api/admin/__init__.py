"""The admin API (FastAPI): tenants, keys, budgets and usage reports."""

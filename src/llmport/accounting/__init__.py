"""Accounting: prices, spend records, their journal on the way to the database, budgets."""

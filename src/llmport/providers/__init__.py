"""Providers: the only code that knows a vendor. One module per backend, behind `base.Provider`."""

"""The web console at ``/ui``: a playground for the /v1 API and an admin view (static files)."""

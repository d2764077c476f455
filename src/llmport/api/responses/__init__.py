"""The Responses API (``/v1/responses``) over the gateway's chat pipeline."""

"""The gateway core: the call context, the policy pipeline and the object that owns them."""

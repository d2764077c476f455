"""The OpenAI wire API: the gateway's native dialect."""

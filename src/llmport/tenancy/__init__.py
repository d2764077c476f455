"""Tenancy: who a caller is beyond the master key (API keys, JWTs, request signing).

The modules here are pure primitives with no HTTP routes and no storage: key
generation and hashing (``keys``), optional HMAC request signing per key
(``signing``) and JWT verification as an alternative to API keys
(``jwt_auth``). The authenticator and the admin API build on them.
"""

"""HTTP only: parse wire JSON into the domain, call the gateway, encode JSON or SSE."""

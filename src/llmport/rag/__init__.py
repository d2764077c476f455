"""Retrieval: vector stores of chunked, embedded files, searched by meaning."""

"""llmport: an OpenAI- and Anthropic-compatible LLM API gateway."""

__version__ = "0.1.0"

# structlog is imported first here, without rich (see lean_imports): every module of the
# package logs through it.
from llmport.lean_imports import structlog as _import_structlog

_import_structlog()

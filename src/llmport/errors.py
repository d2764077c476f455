"""The one exception tree of llmport, and its rendering as a wire error envelope.

Errors are raised where they are detected (a parser, a policy, a provider that
translates its upstream's failure) and rendered exactly once, by the API layer,
in the envelope of the API the client speaks::

    LLMPortError                          status  OpenAI type / Anthropic type
    ├── InvalidRequestError                 400    invalid_request_error
    │   └── ContextLengthExceededError      400    code context_length_exceeded
    ├── AuthenticationError                 401    invalid_request_error / authentication_error
    ├── BudgetExceededError                 402    insufficient_quota / billing_error
    ├── PermissionDeniedError               403    permission_error
    ├── NotFoundError                       404    invalid_request_error / not_found_error
    │   └── ModelNotFoundError              404    code model_not_found
    ├── ConflictError                       409    conflict_error
    ├── PayloadTooLargeError                413    request_too_large
    ├── RateLimitError                      429    rate_limit_error (carries retry_after)
    │   └── CapacityExceededError           429    a deployment's admission queue is full
    ├── ServiceUnavailableError             503    service_unavailable / overloaded_error
    └── UpstreamError                       502    upstream_error / api_error
        ├── UpstreamConnectionError         502    the upstream could not be reached
        ├── UpstreamTimeoutError            504    timeout / timeout_error
        ├── UpstreamProtocolError           502    the upstream answered gibberish
        └── UpstreamStatusError             the upstream's own status, type and message

``retryable`` says whether the same request may succeed on another attempt;
the router reads it, nothing else decides it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class LLMPortError(Exception):
    status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    anthropic_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return self.status

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.anthropic_type, "message": self.message}}

    def openai_json(self) -> bytes:
        return orjson.dumps(self.openai_body())

    def anthropic_json(self) -> bytes:
        return orjson.dumps(self.anthropic_body())


class InvalidRequestError(LLMPortError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class ContentPolicyError(InvalidRequestError):
    """The provider refused the content; carries the provider's reason."""

    default_code = "content_policy_violation"


class AuthenticationError(LLMPortError):
    status = 401
    openai_type = "invalid_request_error"
    anthropic_type = "authentication_error"
    default_code = "invalid_api_key"


class BudgetExceededError(LLMPortError):
    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    default_code = "budget_exceeded"


class PermissionDeniedError(LLMPortError):
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(LLMPortError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.",
                         param="model")
        self.model = model


class ConflictError(LLMPortError):
    status = 409
    openai_type = "conflict_error"
    anthropic_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(LLMPortError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    default_code = "request_too_large"


class RateLimitError(LLMPortError):
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if retry_after is not None:
            headers.setdefault("retry-after", str(max(1, round(retry_after + 0.499))))
        super().__init__(message, code=code, headers=headers)
        self.retry_after = retry_after


class CapacityExceededError(RateLimitError):
    """A deployment's admission queue is full, or a request waited in it too long."""


class ServiceUnavailableError(LLMPortError):
    status = 503
    openai_type = "service_unavailable"
    anthropic_type = "overloaded_error"
    default_code = "service_unavailable"
    retryable = True


class UpstreamError(LLMPortError):
    """A provider failed; the request itself may well be fine."""

    status = 502
    openai_type = "upstream_error"
    anthropic_type = "api_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamConnectionError(UpstreamError):
    default_code = "upstream_connection_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    openai_type = "timeout"
    anthropic_type = "timeout_error"
    default_code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    default_code = "upstream_protocol_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; its status, type and message are kept."""

    RETRYABLE_STATUSES: ClassVar[frozenset[int]] = frozenset(
        {408, 409, 429, 500, 502, 503, 504, 529})

    def __init__(self, status: int, message: str, *, error_type: str | None = None,
                 code: str | None = None, param: str | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code, param=param, headers=headers)
        self.upstream_status = status
        self.error_type = error_type
        self.retry_after = retry_after

    @property
    def status_code(self) -> int:
        return self.upstream_status

    @property
    def is_retryable(self) -> bool:
        return self.upstream_status in self.RETRYABLE_STATUSES

    def openai_body(self) -> dict[str, Any]:
        body = super().openai_body()
        body["error"]["type"] = self.error_type or _openai_type_for(self.upstream_status)
        return body

    def anthropic_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": _anthropic_type_for(self.upstream_status),
                                           "message": self.message}}


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, UpstreamStatusError):
        return error.is_retryable
    return isinstance(error, LLMPortError) and error.retryable


_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                 402: "insufficient_quota",
                 403: "permission_error", 404: "invalid_request_error", 409: "conflict_error",
                 413: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    422: "invalid_request_error", 429: "rate_limit_error", 504: "timeout_error",
                    529: "overloaded_error", 503: "overloaded_error"}


def _openai_type_for(status: int) -> str:
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _anthropic_type_for(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")

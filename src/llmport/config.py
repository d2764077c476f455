"""Configuration: a YAML file, validated strictly, built once and passed down.

Values may reference the environment as ``${VAR}`` or ``${VAR:-default}``.
Unknown keys and bad values are errors that name their location
(``models[1].timeout (line 9)``); secrets are ``SecretStr`` and never printed.
Provider-specific keys of a model entry (``api_base``, ``device``…) are
validated by that provider's own ``Options`` model, so the flat YAML shape
operators write stays strict too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from llmport.accounting.spend import SpendLogConfig
from llmport.batches.settings import BatchesConfig
from llmport.guardrails.settings import GuardrailsConfig
from llmport.observability.settings import ObservabilityConfig
from llmport.policies.cache import CacheConfig
from llmport.policies.idempotency import IdempotencyConfig
from llmport.policies.limits import LimitsConfig
from llmport.providers.registry import provider_class
from llmport.rag.settings import RagConfig
from llmport.routing.settings import RouterConfig
from llmport.tenancy.jwt_config import JWTConfig

DEFAULT_DEMO_MODEL = "llmport-demo"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(StrictModel):
    master_key: SecretStr | None = None
    jwt: JWTConfig | None = Field(default=None, description="accept JWTs as well as API keys")
    key_cache_ttl: float = Field(default=10.0, gt=0, description=(
        "seconds a resolved API key is cached (changes are also pushed to every replica)"))
    last_used_interval: float = Field(default=30.0, gt=0, description=(
        "seconds between writes of API keys' last_used_at (a key's is at most this late)"))
    signature_max_skew: float = Field(default=300.0, gt=0, description=(
        "seconds a signed request's timestamp may differ from the gateway's clock"))

    @field_validator("master_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 8:
            raise ValueError("master_key must be at least 8 characters")
        return value


class Pricing(StrictModel):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class ModelConfig(BaseModel):
    """One deployment: a public model name served by one provider instance.

    Entries sharing a ``name`` are deployments of one model.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[^\s]+$")
    provider: str
    model: str | None = None  # the upstream's id; defaults to ``name``
    timeout: float = Field(default=600.0, gt=0, description="total seconds for one attempt")
    connect_timeout: float = Field(default=10.0, gt=0)
    first_token_timeout: float | None = Field(default=None, gt=0)
    stream_idle_timeout: float | None = Field(default=None, gt=0)
    headers_timeout: float | None = Field(default=None, gt=0, description=(
        "seconds until the upstream's response headers"))
    weight: float = Field(default=1.0, ge=0)
    priority: int = Field(default=1, ge=1, description="tier: 2 is used only when 1 is down")
    max_concurrency: int | None = Field(default=None, ge=1, description=(
        "requests in flight on this deployment; more wait in its priority queue"))
    queue_size: int = Field(default=100, ge=0, description="requests that may wait")
    queue_timeout: float = Field(default=30.0, gt=0, description="longest wait in the queue")
    pricing: Pricing | None = None
    _options: BaseModel | None = PrivateAttr(default=None)

    @property
    def upstream_model(self) -> str:
        return self.model or self.name

    @property
    def options(self) -> Any:
        """The provider-specific options, validated by the provider's ``Options`` model."""
        return self._options


class ResponsesConfig(StrictModel):
    retention_days: float | None = Field(default=30.0, gt=0, description=(
        "stored /v1/responses answers older than this are deleted, hourly (null: kept)"))


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    max_request_mb: float = Field(default=32.0, gt=0)
    ui: bool = Field(default=True, description="serve the web console (playground, admin) at /ui")
    forwarded_allow_ips: list[str] | None = Field(default=None, description=(
        "the proxies (IPs or CIDR ranges; '*' for any) whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed: the client's address (per-IP limits) and scheme "
        "come from them; default Uvicorn's, $FORWARDED_ALLOW_IPS or 127.0.0.1"))


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = True
    log_bodies: bool = Field(default=False, description=(
        "log request and response bodies (secrets and `redact` patterns masked)"))
    redact: list[str] = Field(default_factory=list, description=(
        "regular expressions of personal data to mask in logged bodies"))


class Config(StrictModel):
    auth: AuthConfig = AuthConfig()
    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(name=DEFAULT_DEMO_MODEL, provider="demo")]
    )
    router: RouterConfig = RouterConfig()
    server: ServerConfig = ServerConfig()
    logging: LoggingConfig = LoggingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    cache: CacheConfig = CacheConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    database_url: str | None = Field(default=None, description=(
        "SQLAlchemy async URL (sqlite+aiosqlite:///…, postgresql+asyncpg://…); "
        "default: a SQLite file in data_dir"))
    redis_url: str | None = Field(default=None, description=(
        "shared state for several replicas (limits, budgets, idempotency, invalidations)"))
    redis_prefix: str = Field(default="llmport:", description=(
        "prefix of every Redis key (several deployments may share one Redis)"))
    data_dir: str = Field(default=".llmport", description=(
        "the embedded database and the spend journal (default ./.llmport)"))
    limits: LimitsConfig = LimitsConfig()
    spend_log: SpendLogConfig = SpendLogConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    batches: BatchesConfig = BatchesConfig()
    rag: RagConfig = RagConfig()
    responses: ResponsesConfig = ResponsesConfig()

    @property
    def model_names(self) -> list[str]:
        return list(dict.fromkeys(m.name for m in self.models))

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("redis://", "rediss://",
                                                                 "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite+aiosqlite://",
                                                       "postgresql+asyncpg://")):
            raise ValueError("database_url must be sqlite+aiosqlite:///FILE or "
                             "postgresql+asyncpg://USER@HOST/DB")
        return value

    @property
    def uses_database(self) -> bool:
        """Keys live there (with a master key), and so do the spend log, files, batches and
        vector stores (when on)."""
        return self.auth.master_key is not None or self.spend_log.enabled \
            or self.batches.enabled or self.rag.enabled

    @property
    def database_location(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'llmport.db'}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists each one with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def load_config(path: str | os.PathLike[str] | None,
                environ: dict[str, str] | None = None) -> Config:
    """Read, expand and validate a config file; ``None`` gives the embedded defaults."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        return _from_tree({}, "<defaults>", {}, env)
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror}"]) from None
    try:
        tree = yaml.safe_load(text) or {}
        lines = _line_numbers(yaml.compose(text))
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(tree, dict):
        raise ConfigError(source, ["the top level must be a mapping"])
    return _from_tree(tree, source, lines, env)


def _from_tree(tree: dict[str, Any], source: str, lines: dict[tuple[Any, ...], int],
               env: dict[str, str]) -> Config:
    problems: list[str] = []
    expanded = _expand(tree, (), env, problems, lines)
    for key, variable in (("data_dir", "LLMPORT_DATA_DIR"),
                          ("database_url", "LLMPORT_DATABASE_URL"),
                          ("redis_url", "LLMPORT_REDIS_URL")):
        if key not in expanded and env.get(variable):
            expanded[key] = env[variable]
    if "master_key" not in (expanded.get("auth") or {}) and env.get("LLMPORT_MASTER_KEY"):
        expanded.setdefault("auth", {})
        if isinstance(expanded["auth"], dict):
            expanded["auth"]["master_key"] = env["LLMPORT_MASTER_KEY"]
    if problems:
        raise ConfigError(source, problems)
    models = expanded.get("models")
    if isinstance(models, list):  # provider options are checked even when other keys are wrong
        for index, entry in enumerate(models):
            if isinstance(entry, dict) and isinstance(entry.get("provider"), str):
                extras = {k: v for k, v in entry.items() if k not in ModelConfig.model_fields}
                problems += _check_options(entry["provider"], extras, ("models", index), lines)[1]
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        problems += [_describe(err, lines) for err in exc.errors()]
    else:
        problems += _check_router_names(config, lines) + _check_semantic_cache(config, lines) \
            + _check_rag(config, lines)
    if problems:
        raise ConfigError(source, problems)
    for index, model in enumerate(config.models):
        options, _ = _check_options(model.provider, model.model_extra or {}, ("models", index),
                                    lines)
        model._options = options
        # The raw extras become the validated values: secrets are SecretStr in repr and dumps.
        object.__setattr__(model, "__pydantic_extra__", dict(options or {}))
    return config


def _check_rag(config: Config, lines: dict[tuple[Any, ...], int]) -> list[str]:
    model = config.rag.embedding_model
    if model is None or model in config.model_names:
        return []
    return [f"{_where(('rag', 'embedding_model'), lines)}: unknown model {model!r}"]


def _check_semantic_cache(config: Config, lines: dict[tuple[Any, ...], int]) -> list[str]:
    semantic = config.cache.semantic
    if not semantic.enabled:
        return []
    where = _where(("cache", "semantic", "embedding_model"), lines)
    if semantic.embedding_model is None:
        return [f"{where}: the semantic cache needs a model that serves embeddings"]
    if semantic.embedding_model not in config.model_names:
        return [f"{where}: unknown model {semantic.embedding_model!r}"]
    return []


def _check_router_names(config: Config, lines: dict[tuple[Any, ...], int]) -> list[str]:
    """Every model the router section names must be a configured model."""
    known = set(config.model_names)
    problems = [f"{_where(('router', 'models', name), lines)}: unknown model {name!r}"
                for name in config.router.models if name not in known]
    router = config.router
    for table_name in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        table: dict[str, list[str]] = getattr(router, table_name)
        for source, chain in table.items():
            loc: tuple[Any, ...] = ("router", table_name, source)
            if source not in known:
                problems.append(f"{_where(loc, lines)}: unknown model {source!r}")
            problems += [f"{_where((*loc, i), lines)}: unknown model {name!r}"
                         for i, name in enumerate(chain) if name not in known]
    return problems


def _check_options(provider: str, extras: dict[str, Any], loc: tuple[Any, ...],
                   lines: dict[tuple[Any, ...], int]) -> tuple[BaseModel | None, list[str]]:
    """Validate a model entry's provider-specific keys against that provider's ``Options``."""
    try:
        cls = provider_class(provider)
    except LookupError as exc:
        return None, [f"{_where((*loc, 'provider'), lines)}: {exc}"]
    try:
        return cls.Options.model_validate(extras), []
    except ValidationError as exc:
        return None, [_describe({**err, "loc": (*loc, *err["loc"])}, lines)
                      for err in exc.errors()]


def _expand(node: Any, loc: tuple[Any, ...], env: dict[str, str], problems: list[str],
            lines: dict[tuple[Any, ...], int]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, (*loc, k), env, problems, lines) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, (*loc, i), env, problems, lines) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(f"{_where(loc, lines)}: environment variable {name} is not set")
        return ""

    # Kept a string: pydantic's lax mode reads "30" as a number where a number is expected,
    # and a secret that looks like a number stays a string.
    return _ENV_REF.sub(substitute, node)


def _describe(err: Any, lines: dict[tuple[Any, ...], int]) -> str:
    loc = tuple(err["loc"])
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    # Provider options are validated inside the model entry: their errors name the entry only.
    return f"{_where(loc, lines)}: {message}"


def _where(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    text = text or "<top level>"
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{text} (line {lines[loc[:n]]})"
    return text


def _line_numbers(node: yaml.Node | None, loc: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each key path of a YAML document to its 1-based line."""
    out: dict[tuple[Any, ...], int] = {}
    if node is None:
        return out
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, key.value)
            out.update(_line_numbers(value, child))
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out.update(_line_numbers(value, (*loc, i)))
    return out

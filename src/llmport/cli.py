"""The ``llmport`` command: ``serve``, ``config check`` and ``db upgrade``."""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from llmport.config import Config, ConfigError, load_config

cli = typer.Typer(help="llmport: one OpenAI- and Anthropic-compatible API for every model.",
                  no_args_is_help=True, add_completion=False)
config_cli = typer.Typer(help="Work with configuration files.", no_args_is_help=True)
cli.add_typer(config_cli, name="config")
db_cli = typer.Typer(help="The database: tenants, keys and the spend log.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="YAML config file (default: $LLMPORT_CONFIG, else embedded defaults)",
    exists=False, dir_okay=False)]


def _load(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(2) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="bind address (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config, 8000)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
) -> None:
    """Start the gateway."""
    import uvicorn

    from llmport.api.server import uvicorn_options
    from llmport.app import create_app
    from llmport.observability.logging import configure_logging

    path = config or (Path(os.environ["LLMPORT_CONFIG"]) if os.environ.get("LLMPORT_CONFIG")
                      else None)
    settings = _load(path)
    bind = host or settings.server.host
    listen_port = settings.server.port if port is None else port
    processes = workers or settings.server.workers
    if settings.auth.master_key is None:
        if not _is_loopback(bind):
            typer.echo(f"Refusing to listen on {bind} without auth.master_key: anyone could use "
                       "your models. Set a master key (or LLMPORT_MASTER_KEY), or bind to "
                       "127.0.0.1.", err=True)
            raise typer.Exit(2)
        typer.secho("WARNING: no master key configured: llmport accepts ANY API key and listens "
                    f"on {bind} only. Set auth.master_key before exposing it.",
                    fg=typer.colors.YELLOW, bold=True, err=True)
    configure_logging(settings.logging.level, settings.logging.format)
    settings = settings.model_copy(update={"server": settings.server.model_copy(
        update={"host": bind, "port": listen_port, "workers": processes})})
    models = ", ".join(settings.model_names)
    typer.echo(f"llmport serving {models} on http://{bind}:{listen_port}/v1", err=True)
    common: dict[str, Any] = {"host": bind, "port": listen_port, **uvicorn_options(settings)}
    if processes > 1:
        if settings.redis_url is None and settings.auth.master_key is not None:
            typer.secho(f"WARNING: {processes} workers without redis_url: rate limits, "
                        "concurrency limits, budgets and idempotency are counted per worker. "
                        "Set redis_url to share them.", fg=typer.colors.YELLOW, err=True)
        if settings.uses_database:  # once, here, rather than racing in every worker
            _upgrade(settings)
        if path is not None:
            os.environ["LLMPORT_CONFIG"] = str(path)
        _share_metrics(settings, bind)
        uvicorn.run("llmport.app:app_from_env", factory=True, workers=processes, **common)
    else:
        uvicorn.run(create_app(settings), **common)


def _share_metrics(settings: Config, bind: str) -> None:
    """Workers keep their metrics in files of one fresh directory; scrapes add them up.

    With a separate metrics port, this (supervisor) process serves the sum itself.
    """
    metrics = settings.observability.metrics
    if not metrics.enabled:
        return
    directory = tempfile.mkdtemp(prefix="llmport-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    atexit.register(shutil.rmtree, directory, True)
    if metrics.port is not None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
        start_http_server(metrics.port, bind, registry=registry)


def _upgrade(settings: Config) -> str:
    import asyncio

    from llmport.db.database import Database

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        db = Database(settings.database_location)
        try:
            await db.upgrade()
        finally:
            await db.aclose()

    asyncio.run(run())
    return settings.database_location


@db_cli.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the database migrations (the gateway also does this when it starts)."""
    path = config or (Path(os.environ["LLMPORT_CONFIG"]) if os.environ.get("LLMPORT_CONFIG")
                      else None)
    location = _upgrade(_load(path))
    typer.echo(f"database up to date: {_without_password(location)}")


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@config_cli.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="the YAML file to validate")]) -> None:
    """Validate a config file and print every problem with its location."""
    settings = _load(file)
    deployments = len(settings.models)
    typer.echo(f"{file}: OK ({len(settings.model_names)} models, {deployments} deployments)")


def main() -> None:
    cli(prog_name="llmport")


if __name__ == "__main__":
    main()

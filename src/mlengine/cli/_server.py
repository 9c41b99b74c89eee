"""``mlengine server start|stop|status|run``."""

from __future__ import annotations

import os

import typer

from mlengine.cli._common import OutputFormat, print_resource, settings_from

app = typer.Typer(help="Run the API server (REST, scheduler, prediction).", no_args_is_help=True)


@app.command()
def start(
    ctx: typer.Context,
    workers: int = typer.Option(1, min=1, help="Server processes; they share one scheduler."),
) -> None:
    """Start a background server at MLENGINE_API_URL (state under MLENGINE_HOME)."""
    from mlengine.client._local_server import health, log_file, start_local_server

    settings = settings_from(ctx)
    if health(settings) is not None:
        typer.echo(f"A server already answers at {settings.api_url}.", err=True)
        return
    answer = start_local_server(settings, workers=workers)
    pid = answer.get("serverPid", answer["pid"])
    typer.echo(
        f"Started the mlengine server at {settings.api_url} (pid {pid}, log {log_file(settings)}).",
        err=True,
    )


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the background server of this MLENGINE_HOME. Running jobs keep running and are
    adopted by the next server."""
    from mlengine.client._local_server import stop_local_server

    settings = settings_from(ctx)
    pid = stop_local_server(settings)
    if pid is None:
        typer.echo(f"No mlengine server of {settings.home} is running.", err=True)
    else:
        typer.echo(f"Stopped the mlengine server (pid {pid}).", err=True)


@app.command()
def status(
    ctx: typer.Context,
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """Say whether a server answers at MLENGINE_API_URL. Exit 1 when none does."""
    from mlengine.client._local_server import health

    settings = settings_from(ctx)
    answer = health(settings)
    if answer is None:
        typer.echo(f"No mlengine server answers at {settings.api_url}.", err=True)
        raise typer.Exit(1)
    print_resource({"url": settings.api_url, **answer}, output)


@app.command()
def run(
    ctx: typer.Context,
    host: str = typer.Option(None, help="Bind address (default: the host of MLENGINE_API_URL)."),
    port: int = typer.Option(None, help="Port (default: the port of MLENGINE_API_URL)."),
    workers: int = typer.Option(1, min=1, help="Server processes; they share one scheduler."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    access_log: bool = typer.Option(
        False, "--access-log/--no-access-log", help="Log every request (costs ~0.1 ms each)."
    ),
) -> None:
    """Run the server in the foreground."""
    import uvicorn

    from mlengine.client._local_server import server_address
    from mlengine.server._worker_metrics import SERVER_PID_ENV, worker_metrics_directory

    settings = settings_from(ctx)
    default_host, default_port = server_address(settings)
    for name, variable in (
        ("home", "MLENGINE_HOME"),
        ("database_url", "MLENGINE_DATABASE_URL"),
        ("artifact_root", "MLENGINE_ARTIFACT_ROOT"),
        ("api_url", "MLENGINE_API_URL"),
    ):
        os.environ[variable] = str(settings.values[name])
    settings.home_path.mkdir(parents=True, exist_ok=True)
    os.environ[SERVER_PID_ENV] = str(os.getpid())  # /healthz's serverPid: what stop signals
    # several workers share one socket; /metrics merges what each publishes in this directory
    with worker_metrics_directory(settings.home_path, workers):
        uvicorn.run(
            "mlengine.server:create_app_from_environment",
            factory=True,
            host=host or default_host,
            port=port or default_port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=10,
            access_log=access_log,
        )

"""``mlengine preprocess pipeline.py -- ARGS``: run an Apache Beam pipeline, as ``python
pipeline.py --runner RUNNER ARGS`` runs it (the Dataflow step of the tutorials).

Beam is imported only when the command runs, never by ``mlengine --help``.
"""

from __future__ import annotations

import enum
from pathlib import Path

import typer

__all__ = ["CONTEXT_SETTINGS", "Runner", "preprocess"]

# Unknown options (the pipeline's own flags) are passed on even without "--".
CONTEXT_SETTINGS = {"allow_interspersed_args": True, "ignore_unknown_options": True}


class Runner(enum.StrEnum):
    DirectRunner = "DirectRunner"
    DataflowRunner = "DataflowRunner"
    FlinkRunner = "FlinkRunner"
    SparkRunner = "SparkRunner"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"
    none = "none"


def preprocess(
    pipeline: Path = typer.Argument(..., help="The pipeline file, run as __main__."),
    pipeline_args: list[str] = typer.Argument(
        None, help="Arguments for the pipeline (after --), passed on unchanged."
    ),
    runner: Runner = typer.Option(
        None,
        "--runner",
        help="Beam runner (default DirectRunner: offline, here). Dataflow needs --project, "
        "--region, --temp_location=gs://...; Flink and Spark need --job_endpoint (a job server).",
        show_default=False,
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="DirectRunner worker processes. 1 (one process) is fastest on small inputs; each "
        "extra process costs ~3 s to start and pays off from ~2M rows.",
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.none, "--log-level", help="Beam's own log messages to show on stderr."
    ),
) -> None:
    """Run an Apache Beam pipeline file: mlengine preprocess pipeline.py -- --output out/."""
    from mlengine.beam import run_pipeline

    code = run_pipeline(
        pipeline,
        list(pipeline_args or []),
        runner.value if runner is not None else None,
        workers=workers,
        log_level=log_level.value,
    )
    raise typer.Exit(code)

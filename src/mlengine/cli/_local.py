"""``mlengine local train``: run a trainer in the foreground, as gcloud's local train does."""

from __future__ import annotations

from pathlib import Path

import typer

from mlengine.jobs._local_train import run_local_train

app = typer.Typer(
    help="Run training and prediction locally, without a server.", no_args_is_help=True
)


@app.command("train", context_settings={"allow_interspersed_args": True})
def train(
    user_args: list[str] = typer.Argument(None, help="Arguments for the trainer, after --."),
    module_name: str = typer.Option(..., help="Trainer module, run as python -m MODULE."),
    package_path: Path = typer.Option(None, help="Trainer package directory (default: CWD)."),
    job_dir: str = typer.Option(None, help="Passed to the trainer as --job-dir DIR."),
    distributed: bool = typer.Option(False, "--distributed", help="One process per replica."),
    worker_count: int = typer.Option(None, min=0, help="Workers with --distributed (default 2)."),
    parameter_server_count: int = typer.Option(
        None, min=0, help="Parameter servers with --distributed (default 2)."
    ),
    evaluator_count: int = typer.Option(0, min=0, help="Evaluators with --distributed."),
    start_port: int = typer.Option(27182, min=1, max=65535, help="First port of the cluster."),
) -> None:
    """Run the trainer here; the exit code is the primary replica's."""
    code = run_local_train(
        module_name,
        package_path,
        job_dir,
        list(user_args or []),
        distributed=distributed,
        worker_count=worker_count,
        parameter_server_count=parameter_server_count,
        evaluator_count=evaluator_count,
        start_port=start_port,
        replace_process=True,
    )
    raise typer.Exit(code)

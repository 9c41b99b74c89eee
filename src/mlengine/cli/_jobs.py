"""``mlengine jobs submit training|describe|list|stream-logs|cancel|update``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mlengine.cli._common import OutputFormat, err, print_resource, print_table, settings_from
from mlengine.errors import InvalidArgument
from mlengine.jobs._state import JobState

if TYPE_CHECKING:  # the HTTP client loads on first use: `local train` never needs it
    from mlengine.client import Client, Job

app = typer.Typer(help="Submit and manage training jobs.", no_args_is_help=True)
submit_app = typer.Typer(help="Submit a job.", no_args_is_help=True)
app.add_typer(submit_app, name="submit")

_PROJECT = typer.Option(None, "--project", help="Project (default: MLENGINE_PROJECT).")
_FORMAT = typer.Option(OutputFormat.table, "--format", help="Output format.")


def _client(ctx: typer.Context, project: str | None) -> Client:
    from mlengine.client import Client

    return Client(settings=settings_from(ctx, project=project))


@submit_app.command(
    "training",
    context_settings={"allow_interspersed_args": True},
)
def submit_training(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="The job id."),
    user_args: list[str] = typer.Argument(None, help="Arguments for the trainer, after --."),
    module_name: str = typer.Option(None, help="Trainer module, run as python -m MODULE."),
    package_path: Path = typer.Option(None, help="Trainer package directory to build."),
    packages: str = typer.Option(None, help="Comma-separated package files or URLs."),
    job_dir: str = typer.Option(None, help="Output directory passed as --job-dir."),
    config: Path = typer.Option(None, help="Job YAML/JSON; flags override it."),
    scale_tier: str = typer.Option(
        None, help="basic, basic-gpu, basic-tpu, standard-1, premium-1 or custom."
    ),
    region: str = typer.Option(None, help="Recorded with the job (AI Platform compatibility)."),
    runtime_version: str = typer.Option(None, help="Recorded with the job."),
    python_version: str = typer.Option(None, help="Recorded with the job."),
    master_machine_type: str = typer.Option(None),
    master_accelerator: str = typer.Option(None, help="type=TYPE,count=N"),
    worker_machine_type: str = typer.Option(None),
    worker_count: int = typer.Option(None, min=0),
    worker_accelerator: str = typer.Option(None, help="type=TYPE,count=N"),
    parameter_server_machine_type: str = typer.Option(None),
    parameter_server_count: int = typer.Option(None, min=0),
    evaluator_machine_type: str = typer.Option(None),
    evaluator_count: int = typer.Option(None, min=0),
    labels: str = typer.Option(None, help="k=v,k2=v2"),
    stream_logs: bool = typer.Option(
        False, "--stream-logs", help="Follow the logs until the job ends."
    ),
    async_: bool = typer.Option(False, "--async", hidden=True, help="Deprecated; the default."),
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Submit a training job; it is QUEUED at once and runs on the server."""
    if package_path is None and not packages and config is None:
        raise InvalidArgument("Give --package-path DIR or --packages FILES (or a --config).")
    if package_path is not None and not package_path.is_dir():
        raise InvalidArgument(f"The --package-path {package_path} is not a directory.")
    with _client(ctx, project) as client:
        handle = client.jobs.submit_training(
            job,
            module_name=module_name,
            package_path=package_path,
            packages=[p for p in (packages or "").split(",") if p],
            job_dir=job_dir,
            args=user_args or [],
            config=config,
            scale_tier=scale_tier,
            labels=labels,
            region=region,
            runtime_version=runtime_version,
            python_version=python_version,
            master_machine_type=master_machine_type,
            master_accelerator=master_accelerator,
            worker_machine_type=worker_machine_type,
            worker_count=worker_count,
            worker_accelerator=worker_accelerator,
            parameter_server_machine_type=parameter_server_machine_type,
            parameter_server_count=parameter_server_count,
            evaluator_machine_type=evaluator_machine_type,
            evaluator_count=evaluator_count,
        )
        err.print(f"Job [{handle.job_id}] submitted successfully.")
        if not stream_logs:
            print_resource(handle.resource, output)
            err.print(
                f"Your job is still active. You may view the status of your job with:\n\n"
                f"  $ mlengine jobs describe {handle.job_id}\n\n"
                f"or continue streaming the logs with:\n\n"
                f"  $ mlengine jobs stream-logs {handle.job_id}"
            )
            return
        _stream(handle, None, 0.5)


def _stream(handle: Job, task_name: str | None, polling_interval: float) -> None:
    for entry in handle.logs(follow=True, task_name=task_name, poll_interval=polling_interval):
        sys.stdout.write(
            f"{entry['severity']}\t{entry['timestamp']}\t{entry['taskName']}\t"
            f"{entry.get('trialId', '')}\t{entry['message']}\n"
        )
        sys.stdout.flush()
    resource = handle.refresh()
    state = resource["state"]
    if state != JobState.SUCCEEDED.value:
        message = (resource.get("errorMessage") or "").splitlines()
        first = message[0] if message else ""
        err.print(f"ERROR: Job [{handle.job_id}] ended with state {state}. {first}".rstrip())
        raise typer.Exit(1)


@app.command("stream-logs")
def stream_logs(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="The job id."),
    task_name: str = typer.Option(None, help="Only this replica, e.g. worker-replica-1."),
    polling_interval: float = typer.Option(0.5, min=0.05, help="Seconds between polls."),
    project: str = _PROJECT,
) -> None:
    """Print a job's logs and follow them until it ends (exit 1 unless it SUCCEEDED)."""
    with _client(ctx, project) as client:
        _stream(client.jobs.get(job), task_name, polling_interval)


@app.command("describe")
def describe(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="The job id."),
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Show a job."""
    with _client(ctx, project) as client:
        print_resource(client.jobs.get(job).resource, output)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    filter: str = typer.Option(
        None, "--filter", help="e.g. 'state:RUNNING AND labels.team:ml' or 'jobId:census*'."
    ),
    limit: int = typer.Option(None, min=1, help="At most this many jobs."),
    page_size: int = typer.Option(None, min=1, max=100, help="Jobs per request."),
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """List jobs, newest first."""
    with _client(ctx, project) as client:
        resources = [j.resource for j in client.jobs.list(filter, page_size, limit)]
    rows: list[dict[str, Any]] = [
        {"jobId": r["jobId"], "state": r["state"], "createTime": r.get("createTime")}
        for r in resources
    ]
    print_table(
        rows,
        [("JOB_ID", "jobId"), ("STATUS", "state"), ("CREATED", "createTime")],
        output,
        resources,
    )


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="The job id."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the job is CANCELLED."),
    project: str = _PROJECT,
) -> None:
    """Cancel a job (CANCELLING, then CANCELLED once its processes are gone)."""
    with _client(ctx, project) as client:
        client.jobs.cancel(job)
        err.print(f"Cancelled job [{job}].")
        if wait:
            handle = client.jobs.get(job)
            while not JobState(handle.refresh()["state"]).is_terminal():
                time.sleep(0.2)
            err.print(f"Job [{job}] is {handle.resource['state']}.")


@app.command("update")
def update(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="The job id."),
    update_labels: str = typer.Option(None, help="k=v,k2=v2 to add or change."),
    remove_labels: str = typer.Option(None, help="k,k2 to remove."),
    clear_labels: bool = typer.Option(False, "--clear-labels"),
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Change a job's labels."""
    from mlengine.jobs._submission import parse_labels

    with _client(ctx, project) as client:
        current = client.jobs.get(job).resource
        labels = {} if clear_labels else dict(current.get("labels", {}))
        for key in (remove_labels or "").split(","):
            labels.pop(key.strip(), None)
        labels.update(parse_labels(update_labels))
        resource = client.api.request(
            "PATCH",
            f"/v1/projects/{client.project}/jobs/{job}",
            params={"updateMask": "labels"},
            json={"labels": labels, "etag": current.get("etag")},
        )
        print_resource(resource, output)

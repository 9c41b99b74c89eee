"""``mlengine models ...`` and ``mlengine versions ...``, as in ``gcloud ai-platform``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mlengine.cli._common import (
    REGION,
    OutputFormat,
    err,
    print_resource,
    print_table,
    settings_from,
)
from mlengine.cli._version_flags import (
    request_logging_flags,
    version_flags,
    with_request_logging,
)
from mlengine.errors import InvalidArgument
from mlengine.jobs._submission import load_job_config, parse_labels

if TYPE_CHECKING:
    from mlengine.client import Client

models_app = typer.Typer(help="Create and manage models.", no_args_is_help=True)
versions_app = typer.Typer(help="Create and manage model versions.", no_args_is_help=True)
operations_app = typer.Typer(help="Inspect long-running operations.", no_args_is_help=True)

_PROJECT = typer.Option(None, "--project", help="Project (default: MLENGINE_PROJECT).")
_FORMAT = typer.Option(OutputFormat.table, "--format", help="Output format.")
_MODEL = typer.Option(..., "--model", help="The model.")
_VERSION_CONFIG_KEYS = frozenset(
    {"autoScaling", "deploymentUri", "description", "framework", "labels", "machineType",
     "manualScaling", "packageUris", "predictionClass", "pythonVersion", "runtimeVersion",
     "serviceAccount"}
)  # fmt: skip
"""What ``versions create --config`` may hold: gcloud's list (AIPLATFORM.md §7.3)."""
_VERSION_CONFIG_FLAGS = {
    "acceleratorConfig": "--accelerator",
    "explanationConfig": "--explanation-method, --num-paths, --num-integral-steps",
    "requestLoggingConfig": "versions update --bigquery-table-name, --sampling-percentage",
}
"""Version fields gcloud's config file may not hold, and the flags that set them."""


def _client(ctx: typer.Context, project: str | None) -> Client:
    from mlengine.client import Client

    return Client(settings=settings_from(ctx, project=project))


def _basename(name: Any) -> str:
    return str(name or "").rsplit("/", 1)[-1]


@models_app.command("create")
def create_model(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The model name."),
    description: str = typer.Option(None),
    regions: str = typer.Option(None, "--regions", help="One region (recorded)."),
    region: str = typer.Option(
        None,
        "--region",
        help="Instead of --regions: one region, recorded with the model; 'global' records the "
        "default us-central1, as gcloud does. It selects no endpoint (mlengine has one).",
    ),
    labels: str = typer.Option(None, help="k=v,k2=v2"),
    enable_logging: bool = typer.Option(
        False, "--enable-logging", help="Set onlinePredictionLogging (recorded)."
    ),
    enable_console_logging: bool = typer.Option(
        False, "--enable-console-logging", help="Set onlinePredictionConsoleLogging (recorded)."
    ),
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Create a model."""
    if regions and region:
        raise InvalidArgument("Only one of --region or --regions can be given.")
    recorded = regions or (region if region != "global" else None)
    with _client(ctx, project) as client:
        resource = client.models.create(
            model, description=description, regions=[recorded] if recorded else None,
            labels=parse_labels(labels), enable_logging=enable_logging,
            enable_console_logging=enable_console_logging,
        )  # fmt: skip
    err.print(f"Created model [{model}].")
    print_resource(resource, output)


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    filter: str = typer.Option(
        None, "--filter", help="Server-side, e.g. 'name:census*' or 'labels.team:ml'."
    ),
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """List models."""
    with _client(ctx, project) as client:
        resources = list(client.models.list(filter))
    rows = [
        {
            "name": _basename(r["name"]),
            "default": _basename(r.get("defaultVersion", {}).get("name")),
        }
        for r in resources
    ]
    print_table(rows, [("NAME", "name"), ("DEFAULT_VERSION_NAME", "default")], output, resources)


@models_app.command("describe")
def describe_model(
    ctx: typer.Context,
    model: str,
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Show a model (its default version embedded)."""
    with _client(ctx, project) as client:
        print_resource(client.models.get(model), output)


@models_app.command("delete")
def delete_model(
    ctx: typer.Context, model: str, region: str = REGION, project: str = _PROJECT
) -> None:
    """Delete a model that has no versions."""
    with _client(ctx, project) as client:
        client.models.delete(model)
    err.print(f"Deleted model [{model}].")


_UPDATE_LABELS = typer.Option(None, "--update-labels", help="k=v,k2=v2: added or changed.")
_REMOVE_LABELS = typer.Option(None, "--remove-labels", help="k,k2: removed (if present).")
_CLEAR_LABELS = typer.Option(False, "--clear-labels", help="Remove every label first.")


def _updated_labels(
    current: dict[str, str], update: str | None, remove: str | None, clear: bool
) -> dict[str, str] | None:
    """The labels after ``--clear-labels``, ``--remove-labels`` then ``--update-labels``, as
    ``gcloud ... update`` applies them; None when no label flag was given."""
    if update is None and remove is None and not clear:
        return None
    labels = {} if clear else dict(current)
    for key in (remove or "").split(","):
        labels.pop(key.strip(), None)
    labels.update(parse_labels(update))
    return labels


@models_app.command("update")
def update_model(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The model name."),
    description: str = typer.Option(None, help="The new description."),
    update_labels: str = _UPDATE_LABELS,
    remove_labels: str = _REMOVE_LABELS,
    clear_labels: bool = _CLEAR_LABELS,
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Update a model's description or labels."""
    with _client(ctx, project) as client:
        current = client.models.get(model).get("labels") or {}
        labels = _updated_labels(current, update_labels, remove_labels, clear_labels)
        resource = client.models.update(model, description=description, labels=labels)
    err.print(f"Updated model [{model}].")
    print_resource(resource, output)


@versions_app.command("update")
def update_version(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="The version name."),
    model: str = _MODEL,
    description: str = typer.Option(None, help="The new description."),
    update_labels: str = _UPDATE_LABELS,
    remove_labels: str = _REMOVE_LABELS,
    clear_labels: bool = _CLEAR_LABELS,
    prediction_class: str = typer.Option(
        None, help="New module.Class of the version's code ('' removes it)."
    ),
    package_uris: str = typer.Option(
        None, help="New comma-separated sdists/wheels (paths are uploaded; '' removes them)."
    ),
    config: Path = typer.Option(
        None,
        help="YAML or JSON with description, autoScaling (minNodes, maxNodes), manualScaling "
        "(nodes), requestLoggingConfig, predictionClass, packageUris; flags override it.",
    ),
    bigquery_table_name: str = typer.Option(
        None, help="requestLoggingConfig.bigqueryTableName: project.dataset.table (recorded)."
    ),
    sampling_percentage: float = typer.Option(
        None, help="requestLoggingConfig.samplingPercentage: 0 to 1 (recorded)."
    ),
    async_: bool = typer.Option(False, "--async", help="Return the operation at once."),
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Update a version's description, labels (max_batch_size and max_batch_wait_ms retune its
    batching without reloading it), scaling, request logging or code: a new prediction class or
    packages are loaded and smoke-tested while the version goes on serving its current code."""
    settings = load_job_config(config, "Version") if config is not None else None
    request_logging = request_logging_flags(bigquery_table_name, sampling_percentage)
    with _client(ctx, project) as client:
        current = client.versions.get(model, version)
        labels = _updated_labels(
            current.get("labels") or {}, update_labels, remove_labels, clear_labels
        )
        if request_logging:
            settings = with_request_logging(settings or {}, current, request_logging, config)
        packages = None
        if package_uris is not None:
            packages = [
                uri if "://" in uri else client.jobs.stage_package(Path(uri))
                for uri in package_uris.split(",")
                if uri
            ]
        code_changes = (
            prediction_class is not None
            or packages is not None
            or any(key in (settings or {}) for key in ("predictionClass", "packageUris"))
        )
        resource = client.versions.update(
            model, version, description=description, labels=labels,
            prediction_class=prediction_class, package_uris=packages, config=settings,
            wait=False,
        )  # fmt: skip
        if not async_:  # said once the server accepted the update, then waited for
            if code_changes and not resource.get("done"):
                err.print(f"Updating the code of version [{version}] (this may take a while)...")
            resource = client.operations.wait(resource)
    if not async_:
        err.print(f"Updated version [{version}] of model [{model}].")
    print_resource(resource, output)


@versions_app.command("create")
def create_version(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="The version name."),
    model: str = _MODEL,
    origin: str = typer.Option(None, help="Directory (or fsspec URL) with the model files."),
    framework: str = typer.Option(
        None,
        help="scikit-learn, xgboost, lightgbm, pytorch, keras, onnx or tensorflow "
        "(default: detected from the files).",
    ),
    runtime_version: str = typer.Option(None, help="MAJOR.MINOR, recorded (default 2.11)."),
    python_version: str = typer.Option(None, help="Recorded."),
    description: str = typer.Option(None),
    labels: str = typer.Option(
        None, help="k=v,k2=v2 (max_batch_size, max_batch_wait_ms tune batching)"
    ),
    config: Path = typer.Option(None, help="Version YAML; flags override it."),
    prediction_class: str = typer.Option(
        None, help="module.Class with from_path(model_dir) and predict(instances, **kwargs)."
    ),
    package_uris: str = typer.Option(
        None, help="Comma-separated sdists/wheels (paths are uploaded) for the version's code."
    ),
    machine_type: str = typer.Option(None, help="machineType (recorded; default mls1-c1-m2)."),
    accelerator: str = typer.Option(
        None,
        help="acceleratorConfig: type=TYPE,count=N, e.g. type=nvidia-tesla-t4,count=1 (recorded).",
    ),
    min_nodes: int = typer.Option(None, help="autoScaling.minNodes (recorded)."),
    max_nodes: int = typer.Option(None, help="autoScaling.maxNodes (recorded)."),
    metric_targets: str = typer.Option(
        None,
        help="autoScaling.metrics: cpu-usage=TARGET,gpu-duty-cycle=TARGET, targets in "
        "percent from 0 to 100 (recorded).",
    ),
    service_account: str = typer.Option(None, help="serviceAccount (recorded)."),
    explanation_method: str = typer.Option(
        None,
        help="explanationConfig for `mlengine explain`: sampled-shapley (any model), "
        "integrated-gradients (PyTorch, Keras, TensorFlow) or xrai (recorded, not computed).",
    ),
    num_integral_steps: int = typer.Option(
        None, help="Steps of integrated-gradients or xrai (default 50)."
    ),
    num_paths: int = typer.Option(None, help="Paths of sampled-shapley (default 50)."),
    async_: bool = typer.Option(False, "--async", help="Return the operation at once."),
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Create a version: the files are copied into the artifact store, loaded and checked with
    a smoke prediction before it becomes READY. As gcloud does, the flags override the fields
    of --config (--min-nodes, --max-nodes and --metric-targets replace its autoScaling)."""
    flags = version_flags(
        machine_type=machine_type, accelerator=accelerator, min_nodes=min_nodes,
        max_nodes=max_nodes, metric_targets=metric_targets, service_account=service_account,
        explanation_method=explanation_method, num_integral_steps=num_integral_steps,
        num_paths=num_paths,
    )  # fmt: skip
    if framework is not None and not framework.strip():  # gcloud: "Invalid choice: ''"
        raise InvalidArgument(
            "--framework is empty: give one of scikit-learn, xgboost, lightgbm, pytorch, keras, "
            "onnx or tensorflow, or leave the flag out to detect the framework from the files."
        )
    body: dict[str, Any] = {}
    if config is not None:
        body = load_job_config(config, "Version")
        unknown = sorted(set(body) - _VERSION_CONFIG_KEYS)
        if unknown:
            named = [f"{key} (use {_VERSION_CONFIG_FLAGS[key]})" if key in _VERSION_CONFIG_FLAGS
                     else key for key in unknown]  # fmt: skip
            raise InvalidArgument(
                f"The version config {config} has unknown keys: {', '.join(named)}. "
                f"It may hold {', '.join(sorted(_VERSION_CONFIG_KEYS))}."
            )
    origin = origin or body.pop("deploymentUri", None)
    if not origin:
        raise InvalidArgument("Give --origin DIR (or deploymentUri in --config).")
    body.update(flags)
    if prediction_class:
        body["predictionClass"] = prediction_class
    with _client(ctx, project) as client:
        if package_uris:
            body["packageUris"] = [
                uri if "://" in uri else client.jobs.stage_package(Path(uri))
                for uri in package_uris.split(",")
                if uri
            ]
        resource = client.versions.create(
            model, version, origin, framework=framework, runtime_version=runtime_version,
            python_version=python_version, description=description,
            labels=parse_labels(labels) or None, config=body, wait=False,
        )  # fmt: skip
        if not async_:  # said once the server accepted the version, then waited for
            err.print(f"Creating version [{version}] of model [{model}] (this may take a while)...")
            resource = client.operations.wait(resource)
    print_resource(resource, output)


@versions_app.command("list")
def list_versions(
    ctx: typer.Context,
    model: str = _MODEL,
    filter: str = typer.Option(
        None, "--filter", help="Server-side, e.g. 'state:READY AND framework:SCIKIT_LEARN'."
    ),
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """List a model's versions."""
    with _client(ctx, project) as client:
        resources = list(client.versions.list(model, filter))
    rows = [
        {"name": _basename(r["name"]), "uri": r.get("deploymentUri"), "state": r["state"],
         "framework": r.get("framework", "")}
        for r in resources
    ]  # fmt: skip
    columns = [("NAME", "name"), ("DEPLOYMENT_URI", "uri"), ("STATE", "state"),
               ("FRAMEWORK", "framework")]  # fmt: skip
    print_table(rows, columns, output, resources)


@versions_app.command("describe")
def describe_version(
    ctx: typer.Context,
    version: str,
    model: str = _MODEL,
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Show a version."""
    with _client(ctx, project) as client:
        print_resource(client.versions.get(model, version), output)


@versions_app.command("delete")
def delete_version(ctx: typer.Context, version: str, model: str = _MODEL,
                   region: str = REGION, project: str = _PROJECT) -> None:  # fmt: skip
    """Delete a version (in-flight requests finish first)."""
    with _client(ctx, project) as client:
        client.versions.delete(model, version)
    err.print(f"Deleted version [{version}] of model [{model}].")


@versions_app.command("set-default")
def set_default(
    ctx: typer.Context,
    version: str,
    model: str = _MODEL,
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Make a READY version the model's default."""
    with _client(ctx, project) as client:
        print_resource(client.versions.set_default(model, version), output)


@operations_app.command("describe")
def describe_operation(
    ctx: typer.Context,
    operation: str,
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Show an operation."""
    with _client(ctx, project) as client:
        print_resource(client.operations.get(operation), output)


@operations_app.command("wait")
def wait_operation(
    ctx: typer.Context,
    operation: str,
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """Wait for an operation and show its response (exit 1 when it failed)."""
    with _client(ctx, project) as client:
        print_resource(client.operations.wait(client.operations.get(operation)), output)


@operations_app.command("list")
def list_operations(
    ctx: typer.Context,
    filter: str = typer.Option(
        None, "--filter", help="Server-side, e.g. 'operationType:CREATE_VERSION AND done:false'."
    ),
    region: str = REGION,
    project: str = _PROJECT,
    output: OutputFormat = _FORMAT,
) -> None:
    """List the project's operations."""
    with _client(ctx, project) as client:
        resources = list(client.operations.list(filter))
    rows = [
        {"name": _basename(r["name"]), "type": r["metadata"].get("operationType", ""),
         "done": "True" if r.get("done") else "False",
         "error": (r.get("error") or {}).get("message", "")}
        for r in resources
    ]  # fmt: skip
    columns = [("NAME", "name"), ("TYPE", "type"), ("DONE", "done"), ("ERROR", "error")]
    print_table(rows, columns, output, resources)


@operations_app.command("cancel")
def cancel_operation(
    ctx: typer.Context, operation: str, region: str = REGION, project: str = _PROJECT
) -> None:
    """Cancel a pending version create or code update."""
    with _client(ctx, project) as client:
        client.operations.cancel(operation)
    err.print(f"Cancelled [{_basename(operation)}].")

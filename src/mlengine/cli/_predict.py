"""``mlengine predict`` and ``mlengine local predict``: gcloud's input files (AIPLATFORM.md
§4.5)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from mlengine.cli._common import REGION, OutputFormat, print_resource, print_table, settings_from
from mlengine.errors import InvalidArgument

MAX_LINES = 100


def read_instances(
    json_request: Path | None, json_instances: Path | None, text_instances: Path | None,
    limit: int | None = MAX_LINES,
) -> list[Any]:  # fmt: skip
    """The instances of exactly one of gcloud's input files (``-`` reads stdin).

    Raises:
        InvalidArgument: none or several given, unreadable, empty lines, bad JSON or too many.
    """
    given = [
        (f, p)
        for f, p in (
            ("--json-request", json_request),
            ("--json-instances", json_instances),
            ("--text-instances", text_instances),
        )
        if p
    ]
    if len(given) != 1:
        raise InvalidArgument(
            "Give exactly one of --json-request, --json-instances or --text-instances."
        )
    flag, path = given[0]
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InvalidArgument(f"Cannot read {flag} {path}: {error.strerror}.") from None
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"The {flag} file {path} is not UTF-8 text (byte {error.start}): binary values go "
            'in {"b64": "<base64>"} objects.'
        ) from None
    if flag == "--json-request":
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise InvalidArgument(f"The {flag} file is not valid JSON: {error}.") from None
        if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
            raise InvalidArgument(f'The {flag} file must hold {{"instances": [...]}}.')
        return list(request["instances"])
    lines = text.splitlines()
    instances: list[Any] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise InvalidArgument(f"Line {number} of {flag} {path} is empty.")
        if flag == "--text-instances":
            instances.append(line)
            continue
        try:
            instances.append(orjson.loads(line))
        except orjson.JSONDecodeError as error:
            raise InvalidArgument(f"Line {number} of {flag} {path} is not JSON: {error}.") from None
    if not instances:
        raise InvalidArgument(f"The {flag} file {path} holds no instances.")
    if limit is not None and len(instances) > limit:
        raise InvalidArgument(
            f"{flag} has {len(instances)} instances; predict takes at most {limit} "
            "(use --json-request for more)."
        )
    return instances


def print_predictions(predictions: list[Any], output: OutputFormat) -> None:
    """A table (columns from the first prediction's keys) or ``{"predictions": [...]}``."""
    if output != OutputFormat.table:
        print_resource({"predictions": predictions}, output)
        return
    if predictions and isinstance(predictions[0], dict):
        keys = sorted(predictions[0])
        print_table(predictions, [(k.upper(), k) for k in keys], output)
    else:
        print_table([{"p": p} for p in predictions], [("PREDICTIONS", "p")], output)


def predict(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="The model."),
    version: str = typer.Option(None, "--version", help="The version (default: the default)."),
    json_request: Path = typer.Option(None, help='A JSON file {"instances": [...]}.'),
    json_instances: Path = typer.Option(None, help="Newline-delimited JSON instances."),
    text_instances: Path = typer.Option(None, help="One text instance per line."),
    signature_name: str = typer.Option(None, help="TensorFlow signature."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Class probabilities."),
    region: str = REGION,
    project: str = typer.Option(None, "--project"),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format"),
) -> None:
    """Online prediction through the server (exit 2 when the server refuses the request: a
    bad instance, or the model raised on it, AI Platform's 400; 1 when it cannot be reached)."""
    from mlengine.client import Client

    instances = read_instances(json_request, json_instances, text_instances)
    fields: dict[str, Any] = {}
    if signature_name:
        fields["signature_name"] = signature_name
    if probabilities:
        fields["probabilities"] = True
    with Client(settings=settings_from(ctx, project=project)) as client:
        predictions = client.predict(model, instances, version=version, **fields)
    print_predictions(predictions, output)


def explain(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="The model."),
    version: str = typer.Option(None, "--version", help="The version (default: the default)."),
    json_request: Path = typer.Option(None, help='A JSON file {"instances": [...]}.'),
    json_instances: Path = typer.Option(None, help="Newline-delimited JSON instances."),
    text_instances: Path = typer.Option(None, help="One text instance per line."),
    region: str = REGION,
    project: str = typer.Option(None, "--project"),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format"),
) -> None:
    """Feature attributions of instances by a version with an explanationConfig (sampled
    Shapley, or integrated gradients for PyTorch, Keras and TensorFlow models), through the
    server (exit 2 when the server refuses the request, 1 when it cannot be reached)."""
    from mlengine.client import Client

    instances = read_instances(json_request, json_instances, text_instances)
    with Client(settings=settings_from(ctx, project=project)) as client:
        explanations = client.explain(model, instances, version=version)
    if output != OutputFormat.table:
        print_resource({"explanations": explanations}, output)
        return
    rows = []
    for explanation in explanations:
        (label,) = explanation["attributions_by_label"][:1]
        rows.append(
            {"label": label["label_index"], "example": f"{label['example_score']:.6g}",
             "baseline": f"{label['baseline_score']:.6g}",
             "attributions": orjson.dumps(label["attributions"]).decode()}
        )  # fmt: skip
    columns = [("LABEL_INDEX", "label"), ("EXAMPLE_SCORE", "example"),
               ("BASELINE_SCORE", "baseline"), ("ATTRIBUTIONS", "attributions")]  # fmt: skip
    print_table(rows, columns, output, explanations)


def local_predict(
    model_dir: str = typer.Option(..., help="Directory with the model files."),
    framework: str = typer.Option(None, help="Default: detected from the files."),
    json_request: Path = typer.Option(None),
    json_instances: Path = typer.Option(None),
    text_instances: Path = typer.Option(None),
    signature_name: str = typer.Option(None),
    probabilities: bool = typer.Option(False, "--probabilities"),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format"),
) -> None:
    """Predict with model files on this machine, without a server (exit 2 when the model
    refuses the instances or needs a library that is not installed, 1 when the files do not
    load)."""
    from mlengine.prediction.predictors import (
        B64_FRAMEWORKS,
        FRAMEWORKS,
        decode_b64,
        load_predictor,
    )

    if framework and framework.strip().upper().replace("-", "_") not in FRAMEWORKS:
        raise InvalidArgument(
            f"The --framework flag must be one of {', '.join(FRAMEWORKS)} (or leave it out to "
            f"detect the framework from the files). Got {framework!r}."
        )
    if not model_dir.strip() or not Path(model_dir).is_dir():
        raise InvalidArgument(f"The --model-dir {model_dir!r} is not a directory.")
    instances = read_instances(json_request, json_instances, text_instances, limit=None)
    predictor = load_predictor(model_dir, framework)
    fields: dict[str, Any] = {}
    if signature_name:
        fields["signature_name"] = signature_name
    if probabilities:
        fields["probabilities"] = True
    try:
        if str(predictor.framework) in B64_FRAMEWORKS:  # as the server does
            instances = decode_b64(instances)
        predictions = predictor.predict(instances, **fields)
    finally:
        predictor.close()
    print_predictions(predictions, output)

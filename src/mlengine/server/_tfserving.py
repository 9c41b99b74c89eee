"""TF Serving's REST API over the same versions as ml v1, so that TF Serving clients work as they
are: ``POST /v1/models/{m}[/versions/{v}]:predict``, the model status
``GET /v1/models/{m}[/versions/{v}]`` and its metadata ``GET .../metadata`` (the default
signature, ``serving_default``). ``:classify``, ``:regress`` and version labels
(``/labels/L``) are refused with a 400 saying so. Without a version, the model's default
version answers (AI Platform's rule; TF Serving takes the latest).

Models are looked up in the server's default project (``settings.project``). TF Serving numbers
its versions; any version name is accepted here. These paths start ``/v1/models/`` and ml
v1's start ``/v1/projects/``, so no URL matches both (even for a model called ``projects``).

Failures answer as TF Serving does: ``{"error": "<message>"}``, with 404 for an unknown model
or version, 400 for a bad request (413 when too large), 503/500 for server-side failures. The
same error shape serves the Open Inference Protocol (`mlengine.server._v2`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from mlengine.errors import InvalidArgument, MLEngineError, NotFound, PayloadTooLarge
from mlengine.prediction._serving import PredictionService
from mlengine.server._errors import JSONResponse
from mlengine.server._metrics import PROTOCOL_TFSERVING, count_prediction
from mlengine.store import VersionRecord

__all__ = [
    "all_versions",
    "columnar_outputs",
    "parse_predict_request",
    "plain_error",
    "read_json_object",
    "router",
]

router = APIRouter()

_STATES = {  # ml v1 version state -> TF Serving ModelVersionStatus.State
    "CREATING": "LOADING",
    "READY": "AVAILABLE",
    "UPDATING": "AVAILABLE",
    "DELETING": "UNLOADING",
    "FAILED": "END",
}


def plain_error(error: MLEngineError) -> JSONResponse:
    """``{"error": "<message>"}`` with the error's HTTP status (404 for `NotFound`, 500 for
    any server-side failure but 503)."""
    status = error.http_status
    if isinstance(error, NotFound):
        status = 404
    elif status >= 500 and status != 503:
        status = 500
    return JSONResponse({"error": error.message}, status_code=status)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object; a body sent with ``Content-Encoding: gzip`` or
    ``deflate`` (tritonclient's ``request_compression_algorithm``) is decompressed first.

    Raises:
        PayloadTooLarge: the body, decompressed, has more than `limit` bytes.
        InvalidArgument: the body is not JSON, or not an object, or an encoding that is not
            gzip or deflate, or one that does not decode.
    """
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raw = _decompressed(raw, encoding, limit)
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"The request body has {len(raw)} bytes; the limit is {limit} (max_request_bytes)."
        )
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as error:
        raise InvalidArgument(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    return body


def _decompressed(raw: bytes, encoding: str, limit: int) -> bytes:
    """`raw` decoded from gzip or deflate, reading at most `limit` + 1 bytes out of it (so a
    small body that inflates to gigabytes is refused, not inflated).

    Raises:
        InvalidArgument: another encoding, or data that does not decode.
        PayloadTooLarge: more than `limit` bytes once decoded.
    """
    gzip = 16 + zlib.MAX_WBITS
    windows = {"gzip": gzip, "x-gzip": gzip, "deflate": zlib.MAX_WBITS}  # deflate: zlib format
    if encoding not in windows:
        raise InvalidArgument(
            f"The request's Content-Encoding {encoding!r} is not supported: send gzip, deflate "
            "or an uncompressed body."
        )
    try:
        inflater = zlib.decompressobj(windows[encoding])
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise InvalidArgument(f"The request body is not valid {encoding} data: {error}.") from None
    if len(body) > limit:
        raise PayloadTooLarge(
            f"The request body has more than {limit} bytes once decompressed (max_request_bytes)."
        )
    return body


def parse_predict_request(body: dict[str, Any]) -> tuple[list[Any], bool, dict[str, Any]]:
    """A TF Serving predict body as (row instances, columnar?, predict options).

    Row format: ``{"instances": [...]}``. Columnar format: ``{"inputs": [...]}`` (one input
    whose first dimension is the batch) or ``{"inputs": {"a": [...], "b": [...]}}`` (named
    inputs of one batch size; each row becomes ``{"a": ..., "b": ...}``). The other fields
    (``signature_name``...) are predict options.

    Raises:
        InvalidArgument: neither or both formats, or named inputs of different batch sizes.
    """
    options = dict(body)
    instances = options.pop("instances", None)
    inputs = options.pop("inputs", None)
    if (instances is None) == (inputs is None):
        raise InvalidArgument(
            'The request must have exactly one of "instances" (row format) and "inputs" '
            "(columnar format)."
        )
    if instances is not None:
        if not isinstance(instances, list):
            raise InvalidArgument(
                f"The 'instances' field must be a list. Got {type(instances).__name__}."
            )
        return instances, False, options
    if isinstance(inputs, list):
        return inputs, True, options
    if not isinstance(inputs, dict) or not inputs:
        raise InvalidArgument(
            "The 'inputs' field must be a list (one input) or a non-empty object of named "
            f"inputs. Got {inputs!r:.60}."
        )
    sizes: dict[str, int] = {}
    for name, values in inputs.items():
        if not isinstance(values, list):
            raise InvalidArgument(
                f"The named input '{name}' must be a list with one value per instance. "
                f"Got {values!r:.60}."
            )
        sizes[name] = len(values)
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"'{name}' has {size}" for name, size in sizes.items())
        raise InvalidArgument(f"The named inputs must have one batch size: {shown}.")
    count = next(iter(sizes.values()))
    rows = [{name: values[i] for name, values in inputs.items()} for i in range(count)]
    return rows, True, options


def columnar_outputs(predictions: list[Any]) -> Any:
    """Predictions in TF Serving's columnar form: the list itself, or a list per output name
    when every prediction is an object with the same keys."""
    if predictions and all(isinstance(item, Mapping) for item in predictions):
        names = list(predictions[0])
        if all(list(item) == names for item in predictions):
            return {name: [item[name] for item in predictions] for name in names}
    return predictions


async def _predict(model: str, version: str | None, request: Request) -> Response:
    started = time.perf_counter()
    prediction: PredictionService = request.app.state.prediction
    project = prediction.settings.project
    resolved = version or ""
    instances: list[Any] = []
    response: Response | None = None
    try:
        body = await read_json_object(request, prediction.settings.max_request_bytes)
        instances, columnar, options = parse_predict_request(body)
        record = await prediction.version_record(project, model, version)
        resolved = record.name
        predictions = await prediction.predict_instances(
            project, model, record.name, instances, options
        )
        if columnar:
            response = JSONResponse({"outputs": columnar_outputs(predictions)})
        else:
            response = JSONResponse({"predictions": predictions})
    except MLEngineError as error:
        response = plain_error(error)
    finally:
        code = 500 if response is None else response.status_code
        count_prediction(
            request, PROTOCOL_TFSERVING, model, resolved, code, started, len(instances)
        )
    return response


@router.post("/v1/models/{model}/versions/{version}:predict")
async def predict_version(model: str, version: str, request: Request) -> Response:
    """TF Serving ``Predict`` with one version."""
    return await _predict(model, version, request)


@router.post("/v1/models/{model}:predict")
async def predict_model(model: str, request: Request) -> Response:
    """TF Serving ``Predict`` with the model's default version."""
    return await _predict(model, None, request)


def _version_status(record: VersionRecord) -> dict[str, Any]:
    failed = record.state == "FAILED"
    return {
        "version": record.name,
        "state": _STATES.get(record.state, "UNKNOWN"),
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": record.error_message if failed else "",
        },
    }


def all_versions(prediction: PredictionService, project: str, model: str) -> list[VersionRecord]:
    """Every version of a model, by name (blocking: call it on a worker thread).

    Raises:
        NotFound: no such model.
    """
    registry = prediction.models.registry
    records: list[VersionRecord] = []
    token: str | None = None
    while True:
        page, token = registry.list_versions(project, model, page_size=500, page_token=token)
        records.extend(page)
        if token is None:
            return records


async def _status(model: str, version: str | None, request: Request) -> Response:
    prediction: PredictionService = request.app.state.prediction
    project = prediction.settings.project
    registry = prediction.models.registry
    try:
        if version is not None:
            records = [await run_in_threadpool(registry.get_version, project, model, version)]
        else:
            records = await run_in_threadpool(all_versions, prediction, project, model)
            if not records:
                raise NotFound(f"Could not find any versions of model {model}.")
    except MLEngineError as error:
        return plain_error(error)
    return JSONResponse({"model_version_status": [_version_status(r) for r in records]})


@router.get("/v1/models/{model}/versions/{version}")
async def version_status(model: str, version: str, request: Request) -> Response:
    """TF Serving ``GetModelStatus`` of one version."""
    return await _status(model, version, request)


@router.get("/v1/models/{model}")
async def model_status(model: str, request: Request) -> Response:
    """TF Serving ``GetModelStatus`` of every version of the model."""
    return await _status(model, None, request)


_DT_TYPES = {  # Open Inference Protocol datatype -> TensorFlow DataType name
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}


def _tensor_info(tensor: Mapping[str, Any]) -> dict[str, Any]:
    """A ``TensorInfo`` (proto3 JSON) from Open Inference Protocol tensor metadata."""
    return {
        "dtype": _DT_TYPES.get(str(tensor["datatype"]), "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in tensor["shape"]],
            "unknown_rank": False,
        },
        "name": str(tensor["name"]),
    }


async def _metadata(model: str, version: str | None, request: Request) -> Response:
    from mlengine.server._v2 import tensor_metadata  # _v2 imports this module

    prediction: PredictionService = request.app.state.prediction
    try:
        record = await prediction.version_record(prediction.settings.project, model, version)
        inputs, outputs = await tensor_metadata(prediction, record)
    except MLEngineError as error:
        return plain_error(error)
    signature = {
        "inputs": {str(tensor["name"]): _tensor_info(tensor) for tensor in inputs},
        "outputs": {str(tensor["name"]): _tensor_info(tensor) for tensor in outputs},
        "method_name": "tensorflow/serving/predict",
    }
    return JSONResponse(
        {
            "model_spec": {"name": model, "signature_name": "", "version": record.name},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        }
    )


@router.get("/v1/models/{model}/versions/{version}/metadata")
async def version_metadata(model: str, version: str, request: Request) -> Response:
    """TF Serving ``GetModelMetadata`` (``signature_def``) of one version."""
    return await _metadata(model, version, request)


@router.get("/v1/models/{model}/metadata")
async def model_metadata(model: str, request: Request) -> Response:
    """TF Serving ``GetModelMetadata`` of the model's default version."""
    return await _metadata(model, None, request)


def _not_served(what: str) -> Response:
    return plain_error(InvalidArgument(what))


_NO_CLASSIFY = (
    "TF Serving's Classify and Regress APIs (tf.Example inputs) are not served here: use "
    ':predict with instances (a classifier answers probabilities with "probabilities": true).'
)
_NO_LABELS = (
    "Version labels are not served here: name the version (/versions/V), or leave it out for "
    "the model's default version."
)


@router.post("/v1/models/{model}/versions/{version}:classify")
@router.post("/v1/models/{model}/versions/{version}:regress")
@router.post("/v1/models/{model}:classify")
@router.post("/v1/models/{model}:regress")
async def classify_or_regress() -> Response:
    """TF Serving ``Classify``/``Regress``: refused with 400 saying to use ``:predict``."""
    return _not_served(_NO_CLASSIFY)


@router.api_route("/v1/models/{model}/labels/{rest:path}", methods=["GET", "POST"])
async def labels() -> Response:
    """TF Serving's version labels: refused with 400 saying to name the version."""
    return _not_served(_NO_LABELS)

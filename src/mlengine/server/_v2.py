"""The Open Inference Protocol (KServe v2, Triton's HTTP API) over the same versions as ml v1,
so that ``tritonclient.http`` and KServe clients work as they are.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{m}[/versions/{v}]`` (model metadata), ``GET .../ready`` and
``POST .../infer``. Models are looked up in the server's default project; without a version,
the model's default version answers.

Tensors travel as JSON only: a request that uses the binary tensor data extension (the
``Inference-Header-Content-Length`` header) is refused with 400, and outputs are always JSON,
whatever ``binary_data``/``binary_data_output`` a client asks for (clients read both).

An infer request becomes predict instances: one input of shape ``[B, ...]`` gives B rows;
several named inputs of one batch size B give B objects keyed by input name. Request
``parameters`` other than Triton's reserved ones become predict options (e.g.
``{"probabilities": true}``). Predictions become one output tensor, named after the model's
single output (``output-0`` when it declares none: `Predictor.tensor_signature`), or one per
key when every prediction is an object. Errors answer ``{"error": "<message>"}`` (404 for an
unknown model or version).
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import mlengine
from mlengine.errors import InvalidArgument, MLEngineError, OperationFailed, invalid_field
from mlengine.prediction._serving import PredictionService
from mlengine.prediction.predictors import TensorInput, TensorSignature
from mlengine.server._errors import JSONResponse
from mlengine.server._metrics import PROTOCOL_V2, count_prediction, readiness
from mlengine.server._tfserving import (
    all_versions,
    columnar_outputs,
    plain_error,
    read_json_object,
)
from mlengine.store import VersionRecord

__all__ = ["router", "tensor_metadata"]

router = APIRouter()

_DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
_DATATYPE_NAMES = "one of " + ", ".join(_DATATYPES)
_RESERVED_PARAMETERS = frozenset(  # Triton's; also any name that starts with "triton_"
    (
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        "headers",
        "binary_data_output",
    )
)
_BINARY_HEADER = "inference-header-content-length"
_SPEC_DATATYPES = {np.dtype(kind): name for name, kind in _DATATYPES.items() if name != "BYTES"}
UNNAMED_INPUT = "input-0"
"""The name of a model's one input when it declares none (scikit-learn...)."""
UNNAMED_OUTPUT = "output-0"
"""The name of a model's one output when it declares none."""

# (inputs, outputs) metadata per loaded predictor: forgotten when the version is unloaded
_SIGNATURES: weakref.WeakKeyDictionary[Any, tuple[list[Any], list[Any]]] = (
    weakref.WeakKeyDictionary()
)


# -- request tensors -> instances -----------------------------------------------------------


def _shape(value: Any, name: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
    ):
        raise invalid_field(
            "shape",
            f"input '{name}'",
            "a non-empty list of integers >= 0 (the first is the batch size)",
            value,
        )
    return value


def _flat_strings(data: Any, name: str) -> list[str]:
    flat: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            flat.append(item)
        else:
            raise InvalidArgument(
                f"The 'data' of input '{name}' must hold strings for datatype BYTES. "
                f"Got {item!r:.40}."
            )
    return flat


def _numbers(data: Any, name: str, datatype: str) -> np.ndarray:
    """`data` (flat or nested) as a flat array of `datatype`, checked value by value."""
    if not isinstance(data, list):
        raise InvalidArgument(f"The 'data' of input '{name}' must be a list. Got {data!r:.40}.")
    try:
        raw = np.asarray(data)
    except ValueError:
        raise InvalidArgument(
            f"The 'data' of input '{name}' must be a flat list, or nested lists of one shape."
        ) from None
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b" and raw.size:
            raise InvalidArgument(
                f"The 'data' of input '{name}' must hold true/false for datatype BOOL."
            )
    elif kind not in "iuf" and raw.size:
        bad = next((v for v in raw.reshape(-1).tolist() if type(v) not in (int, float)), None)
        raise InvalidArgument(
            f"The 'data' of input '{name}' must hold numbers for datatype {datatype}. "
            f"Got {bad!r:.40}."
        )
    dtype = np.dtype(_DATATYPES[datatype])
    if dtype.kind in "iu" and raw.size:
        if kind == "f" and not np.all(np.mod(raw, 1) == 0):
            raise InvalidArgument(
                f"The 'data' of input '{name}' must hold integers for datatype {datatype}."
            )
        limits = np.iinfo(dtype)
        if raw.min() < limits.min or raw.max() > limits.max:
            raise InvalidArgument(
                f"The 'data' of input '{name}' has values outside the range of {datatype} "
                f"[{limits.min}, {limits.max}]."
            )
    return raw.astype(dtype).reshape(-1)


def _input_tensor(spec: Any, index: int) -> tuple[str, np.ndarray]:
    """One request input as (name, array of its shape).

    Raises:
        InvalidArgument: a missing or bad name, shape, datatype or data, or data whose size
            does not fit the shape.
    """
    if not isinstance(spec, dict):
        raise InvalidArgument(
            f"Input {index} must be an object with name, shape, datatype and data. "
            f"Got {spec!r:.40}."
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_field("name", f"input {index}", "a non-empty string", name)
    datatype = spec.get("datatype")
    if datatype not in _DATATYPES:
        raise invalid_field("datatype", f"input '{name}'", _DATATYPE_NAMES, datatype)
    shape = _shape(spec.get("shape"), name)
    if "data" not in spec:
        if isinstance(spec.get("parameters"), dict) and "binary_data_size" in spec["parameters"]:
            raise InvalidArgument(_binary_message())
        raise InvalidArgument(f"Input '{name}' has no 'data' field.")
    data = spec["data"]
    if datatype == "BYTES":
        array = np.array(_flat_strings(data, name), dtype=np.object_)
    else:
        array = _numbers(data, name, datatype)
    needed = math.prod(shape)
    if array.size != needed:
        raise InvalidArgument(
            f"The 'data' of input '{name}' has {array.size} values; its shape {shape} needs "
            f"{needed}."
        )
    return name, array.reshape(shape)


def instances_of(inputs: Any) -> list[Any]:
    """The predict instances of an infer request's ``inputs``.

    Raises:
        InvalidArgument: no inputs, a malformed input, repeated names, or inputs of different
            batch sizes.
    """
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("The 'inputs' field of an infer request must be a non-empty list.")
    tensors = [_input_tensor(spec, index) for index, spec in enumerate(inputs)]
    if len(tensors) == 1:
        rows: list[Any] = tensors[0][1].tolist()
        return rows
    names = [name for name, _ in tensors]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidArgument(f"The inputs must have distinct names; repeated: {repeated}.")
    sizes = {name: array.shape[0] for name, array in tensors}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"'{name}' has {size}" for name, size in sizes.items())
        raise InvalidArgument(
            f"The inputs must have one batch size (the first dimension of their shapes): {shown}."
        )
    columns = {name: array.tolist() for name, array in tensors}
    count = next(iter(sizes.values()))
    return [{name: column[i] for name, column in columns.items()} for i in range(count)]


def options_of(parameters: Any) -> dict[str, Any]:
    """Predict options from an infer request's ``parameters``, without Triton's reserved ones.

    Raises:
        InvalidArgument: `parameters` is not an object.
    """
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise invalid_field("parameters", "the infer request", "an object", parameters)
    return {
        key: value
        for key, value in parameters.items()
        if key not in _RESERVED_PARAMETERS and not key.startswith("triton_")
    }


# -- predictions -> response tensors --------------------------------------------------------


def _datatype(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64" if kind == "i" else "UINT64"
    if kind == "f":
        return {2: "FP16", 4: "FP32"}.get(array.dtype.itemsize, "FP64")
    return "BYTES"


def _output_tensor(name: str, values: list[Any], dtype: Any = None) -> dict[str, Any]:
    """One response tensor from per-instance values; numbers in floating point take the
    model's declared `dtype` for the output when it is one (FP32 for a float32 model: JSON
    carried them as doubles).

    Raises:
        OperationFailed: the values do not form a tensor (different shapes, or objects).
    """
    try:
        array = np.asarray(values)
    except ValueError:
        array = None
    if array is not None and array.dtype.kind in "OSU":
        flat = array.reshape(-1).tolist()
        if all(isinstance(item, str) for item in flat):
            return {"name": name, "datatype": "BYTES", "shape": list(array.shape), "data": flat}
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise OperationFailed(
            f"The predictions for output '{name}' do not form a tensor (their shapes or types "
            "differ); use the ml v1 or TF Serving predict route for this model."
        )
    if array.dtype.kind in "iu":
        array = array.astype(np.int64 if array.dtype.kind == "i" else np.uint64)
    elif dtype is not None and array.dtype.kind == "f" and np.dtype(dtype).kind == "f":
        array = array.astype(dtype)
    return {
        "name": name,
        "datatype": _datatype(array),
        "shape": list(array.shape),
        "data": np.ascontiguousarray(array).reshape(-1),
    }


def output_tensors(
    predictions: list[Any], signature: TensorSignature | None = None
) -> list[dict[str, Any]]:
    """Response tensors: one per key when every prediction is an object, else one tensor
    named after the model's single output (``output-0`` when it has no name); floating-point
    outputs in the dtype `signature` declares for them.

    Raises:
        OperationFailed: the predictions do not form tensors.
    """
    columns = columnar_outputs(predictions)
    declared = signature.output_dtype if signature is not None else (lambda _: None)
    if isinstance(columns, dict):
        return [
            _output_tensor(str(key), values, declared(str(key))) for key, values in columns.items()
        ]
    name = _single_output(signature)
    return [_output_tensor(name, columns, declared(name))]


def _single_output(signature: TensorSignature | None) -> str:
    """The name of a model's one output, or ``output-0`` when it has several or none known."""
    if signature is not None and len(signature.outputs) == 1:
        return signature.outputs[0]
    return UNNAMED_OUTPUT


async def _tensor_signature(
    prediction: PredictionService, record: VersionRecord, options: Mapping[str, Any]
) -> TensorSignature | None:
    """The tensors the loaded version declares under `options`, None when it declares none
    (or the options name nothing it has: the prediction itself says so)."""
    entry = await prediction.loaded.get((record.project, record.model, record.name))
    return _declared(entry.predictor, options)


def _declared(predictor: Any, options: Mapping[str, Any]) -> TensorSignature | None:
    """`predictor.tensor_signature(**options)`, or None when the options name nothing the
    model has."""
    try:
        signature: TensorSignature | None = predictor.tensor_signature(**options)
    except MLEngineError:
        return None
    return signature


def _requested(outputs: Any, tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tensors the request's ``outputs`` names, in its order (all when it names none)."""
    if outputs is None:
        return tensors
    if not isinstance(outputs, list):
        raise invalid_field("outputs", "the infer request", "a list", outputs)
    by_name = {tensor["name"]: tensor for tensor in tensors}
    chosen = []
    for spec in outputs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in by_name:
            raise InvalidArgument(
                f"The model has no output {name!r}; its outputs are {sorted(by_name)}."
            )
        chosen.append(by_name[name])
    return chosen or tensors


def _binary_message() -> str:
    return (
        "This server speaks the JSON form of the Open Inference Protocol only: the binary "
        "tensor data extension (Inference-Header-Content-Length) is not supported. Send "
        "tensors as JSON (tritonclient: binary_data=False)."
    )


# -- routes ---------------------------------------------------------------------------------


def _project(request: Request) -> tuple[PredictionService, str]:
    prediction: PredictionService = request.app.state.prediction
    return prediction, prediction.settings.project


@router.get("/v2/health/live")
async def server_live() -> Response:
    """The server process answers."""
    return JSONResponse({"live": True})


@router.get("/v2/health/ready")
async def server_ready(request: Request) -> Response:
    """200 when the server serves (as ``/readyz``), else 503."""
    reason = await readiness(request)
    if reason is not None:
        return JSONResponse({"ready": False, "error": reason}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/v2")
async def server_metadata() -> Response:
    """Server name, version and protocol extensions (none)."""
    return JSONResponse({"name": "mlengine", "version": mlengine.__version__, "extensions": []})


async def _ready_names(prediction: PredictionService, project: str, model: str) -> list[str]:
    records = await run_in_threadpool(all_versions, prediction, project, model)
    return [record.name for record in records if record.state == "READY"]


def _declared_input(spec: TensorInput) -> dict[str, Any] | None:
    """Metadata of an input the model declares, or None when its shape is unknown."""
    if spec.shape is None:
        return None
    datatype = _SPEC_DATATYPES.get(np.dtype(spec.dtype), "BYTES")
    shape = [-1, *(-1 if size is None else int(size) for size in spec.shape)]
    return {"name": spec.name, "datatype": datatype, "shape": shape}


def _describe_inputs(
    examples: list[Any] | None, signature: TensorSignature | None
) -> list[dict[str, Any]]:
    """Input metadata: what the model declares (name, datatype, shape), else what example
    instances show (best effort: [] when it cannot be told)."""
    declared = [_declared_input(spec) for spec in signature.inputs] if signature else []
    if declared and all(entry is not None for entry in declared):
        return [entry for entry in declared if entry is not None]
    if not examples:
        return []
    first = examples[0]
    single = signature.inputs[0].name if signature and len(signature.inputs) == 1 else None
    items = (
        list(first.items()) if isinstance(first, Mapping) else [(single or UNNAMED_INPUT, first)]
    )
    described = []
    for name, value in items:
        try:
            array = np.asarray(value)
        except ValueError:
            return []
        kind = array.dtype.kind
        if kind not in "biufU":
            return []
        datatype = "FP32" if kind == "f" else _datatype(array)
        described.append({"name": str(name), "datatype": datatype, "shape": [-1, *array.shape]})
    return described


async def tensor_metadata(
    prediction: PredictionService, record: VersionRecord
) -> tuple[list[Any], list[Any]]:
    """(inputs, outputs) metadata of a version (``{"name", "datatype", "shape"}`` each, shapes
    with -1 for the batch), derived once per loaded predictor; the TF Serving metadata route
    uses it too."""
    entry = await prediction.loaded.get((record.project, record.model, record.name))
    known = _SIGNATURES.get(entry.predictor)
    if known is not None:
        return known
    outputs: list[Any] = []
    signature = _declared(entry.predictor, {})
    try:
        examples = await entry.batcher.run_exclusive(entry.predictor.example_instances)
    except Exception:
        examples = None
    inputs = _describe_inputs(examples, signature)
    if examples:
        try:
            predictions = await prediction.predict_instances(
                record.project, record.model, record.name, list(examples[:1])
            )
            outputs = [
                {"name": t["name"], "datatype": t["datatype"], "shape": [-1, *t["shape"][1:]]}
                for t in output_tensors(predictions, signature)
            ]
        except MLEngineError:
            outputs = []
    metadata = (inputs, outputs)
    with contextlib.suppress(TypeError):  # no weak reference: derived again next time
        _SIGNATURES[entry.predictor] = metadata
    return metadata


async def _model_metadata(model: str, version: str | None, request: Request) -> Response:
    prediction, project = _project(request)
    try:
        record = await prediction.version_record(project, model, version)
        versions = await _ready_names(prediction, project, model)
        inputs, outputs = await tensor_metadata(prediction, record)
    except MLEngineError as error:
        return plain_error(error)
    return JSONResponse(
        {
            "name": model,
            "versions": versions,
            "platform": str(record.spec.get("framework") or "").lower(),
            "inputs": inputs,
            "outputs": outputs,
        }
    )


@router.get("/v2/models/{model}/versions/{version}")
async def version_metadata(model: str, version: str, request: Request) -> Response:
    """Metadata of one version: versions, platform, inputs and outputs."""
    return await _model_metadata(model, version, request)


@router.get("/v2/models/{model}")
async def model_metadata(model: str, request: Request) -> Response:
    """Metadata of the model's default version."""
    return await _model_metadata(model, None, request)


async def _model_ready(model: str, version: str | None, request: Request) -> Response:
    prediction, project = _project(request)
    try:
        await prediction.version_record(project, model, version)
    except MLEngineError as error:
        return plain_error(error)
    return JSONResponse({"name": model, "ready": True})


@router.get("/v2/models/{model}/versions/{version}/ready")
async def version_ready(model: str, version: str, request: Request) -> Response:
    """200 when the version is READY; 400 when it is not, 404 when there is no such version."""
    return await _model_ready(model, version, request)


@router.get("/v2/models/{model}/ready")
async def model_ready(model: str, request: Request) -> Response:
    """200 when the model has a READY default version; else 400, or 404 for no such model."""
    return await _model_ready(model, None, request)


async def _infer(model: str, version: str | None, request: Request) -> Response:
    started = time.perf_counter()
    prediction, project = _project(request)
    resolved = version or ""
    instances: list[Any] = []
    response: Response | None = None
    try:
        if _BINARY_HEADER in request.headers:
            raise InvalidArgument(_binary_message())
        body = await read_json_object(request, prediction.settings.max_request_bytes)
        instances = instances_of(body.get("inputs"))
        options = options_of(body.get("parameters"))
        record = await prediction.version_record(project, model, version)
        resolved = record.name
        predictions = await prediction.predict_instances(
            project, model, record.name, instances, options
        )
        answer: dict[str, Any] = {"model_name": model, "model_version": record.name}
        if "id" in body:
            answer["id"] = body["id"]
        signature = await _tensor_signature(prediction, record, options) if predictions else None
        answer["outputs"] = _requested(body.get("outputs"), output_tensors(predictions, signature))
        response = JSONResponse(answer)
    except MLEngineError as error:
        response = plain_error(error)
    finally:
        code = 500 if response is None else response.status_code
        count_prediction(request, PROTOCOL_V2, model, resolved, code, started, len(instances))
    return response


@router.post("/v2/models/{model}/versions/{version}/infer")
async def version_infer(model: str, version: str, request: Request) -> Response:
    """Inference with one version."""
    return await _infer(model, version, request)


@router.post("/v2/models/{model}/infer")
async def model_infer(model: str, request: Request) -> Response:
    """Inference with the model's default version."""
    return await _infer(model, None, request)

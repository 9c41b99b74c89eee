"""A prediction worker process: loads one version in an isolated environment and answers
predict calls from its parent over stdin/stdout.

Frames are a 4-byte big-endian length and a pickle (the channel is private to two processes
of ours; pickle carries bytes and numpy values that JSON cannot). The first frame the worker
writes is ``{"framework": ...}`` once the model loaded, or ``{"error": ...}``. Then each request
``{"instances": [...], "options": {...}}`` gets ``{"json": b"[...]"}`` (the predictions,
checked and serialised in the worker) or
``{"error": message, "kind": "prediction" | "internal", "instance_index": i | None}``.

Run as ``python -m mlengine.prediction._worker MODEL_DIR [--prediction-class C]
[--framework F]`` with the version's environment's interpreter.
"""

from __future__ import annotations

import argparse
import os
import pickle
import pydoc
import struct
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["main", "read_frame", "write_frame"]


def write_frame(stream: IO[bytes], message: Any) -> None:
    """Write one length-prefixed pickle frame."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """Read one frame; None at end of stream."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack(">I", header)
    return pickle.loads(stream.read(size))


def _load(model_dir: str, prediction_class: str | None, framework: str | None) -> Any:
    if prediction_class:
        cls = pydoc.locate(prediction_class)
        if cls is None:
            raise ImportError(f"Cannot import the prediction class {prediction_class!r}.")
        for method in ("from_path", "predict"):
            if not callable(getattr(cls, method, None)):
                raise TypeError(f"The prediction class {prediction_class} has no {method}().")
        return cls.from_path(model_dir)  # type: ignore[attr-defined]
    from mlengine.prediction.predictors import load_predictor

    return load_predictor(model_dir, framework)


def _private_channel() -> tuple[IO[bytes], IO[bytes]]:
    """The worker's request and reply streams, moved off file descriptors 0 and 1: what the
    predictor (or a program it runs, or a C library) reads from stdin or writes to stdout
    must not take a request or corrupt a reply. Its stdout goes to stderr, its stdin is empty.
    """
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    return requests, replies


def _json_outputs(predictions: Any, count: int) -> bytes:
    """The predictor's outputs as a JSON list, checked: one JSON value per instance.

    Raises:
        InvalidArgument: not a list of `count` JSON-serialisable values (naming the instance).
    """
    import orjson

    from mlengine.errors import InvalidArgument

    if hasattr(predictions, "tolist") and not hasattr(predictions, "columns"):
        predictions = predictions.tolist()  # numpy arrays; a pandas Series
    if isinstance(predictions, Mapping) or hasattr(predictions, "columns"):
        raise InvalidArgument(
            f"Prediction failed: the predictor returned a {type(predictions).__name__}; "
            "predict must return a list with one output per instance."
        )
    try:
        outputs = list(predictions)
    except TypeError:
        raise InvalidArgument(
            f"Prediction failed: the predictor returned a {type(predictions).__name__}, not a "
            "list with one output per instance."
        ) from None
    if len(outputs) != count:
        raise InvalidArgument(
            f"Prediction failed: the predictor returned {len(outputs)} outputs for {count} "
            "instances."
        )
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(outputs, option=option)
    except TypeError:
        for index, output in enumerate(outputs):
            try:
                orjson.dumps(output, option=option)
            except TypeError as error:
                failure = InvalidArgument(
                    f"Prediction failed: the predictor's output for instance {index} is not "
                    f"JSON-serialisable ({error})."
                )
                failure.instance_index = index  # type: ignore[attr-defined]
                raise failure from None
        raise


def main(argv: list[str] | None = None) -> int:
    """Serve predict calls for one version until stdin closes."""
    parser = argparse.ArgumentParser(prog="mlengine.prediction._worker")
    parser.add_argument("model_dir")
    parser.add_argument("--prediction-class")
    parser.add_argument("--framework")
    args = parser.parse_args(argv)
    requests, replies = _private_channel()
    sys.path.append(os.path.abspath(args.model_dir))  # after the version's packages (-P)
    try:
        predictor = _load(args.model_dir, args.prediction_class, args.framework)
    except Exception as error:
        write_frame(replies, {"error": f"{type(error).__name__}: {error}"})
        return 1
    framework = "CUSTOM" if args.prediction_class else getattr(predictor, "framework", "CUSTOM")
    write_frame(replies, {"framework": framework})
    from mlengine.errors import InvalidArgument

    while (request := read_frame(requests)) is not None:
        try:
            predictions = predictor.predict(request["instances"], **request["options"])
            write_frame(replies, {"json": _json_outputs(predictions, len(request["instances"]))})
        except InvalidArgument as error:
            write_frame(
                replies,
                {
                    "error": str(error),
                    "kind": "prediction",
                    "instance_index": getattr(error, "instance_index", None),
                },
            )
        except Exception as error:
            write_frame(replies, {"error": f"{type(error).__name__}: {error}", "kind": "internal"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

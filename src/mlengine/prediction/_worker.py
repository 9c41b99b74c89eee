"""A prediction worker process: loads one version in an isolated environment and answers
predict calls from its parent over stdin/stdout.

Frames are a 4-byte big-endian length and a pickle (the channel is private to two processes
of ours; pickle carries bytes and numpy values that JSON cannot). The first frame the worker
writes is ``{"framework": ...}`` once the model loaded, or ``{"error": ...}``. Then each request
``{"instances": [...], "options": {...}}`` gets ``{"predictions": [...]}`` or
``{"error": message, "kind": "prediction" | "internal", "instance_index": i | None}``.

Run as ``python -m mlengine.prediction._worker MODEL_DIR [--prediction-class C]
[--framework F]`` with the version's environment's interpreter.
"""

from __future__ import annotations

import argparse
import pickle
import pydoc
import struct
import sys
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


def main(argv: list[str] | None = None) -> int:
    """Serve predict calls for one version until stdin closes."""
    parser = argparse.ArgumentParser(prog="mlengine.prediction._worker")
    parser.add_argument("model_dir")
    parser.add_argument("--prediction-class")
    parser.add_argument("--framework")
    args = parser.parse_args(argv)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # user code that prints must not corrupt the channel
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
            if hasattr(predictions, "tolist"):
                predictions = predictions.tolist()
            write_frame(replies, {"predictions": list(predictions)})
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

"""TENSORFLOW: a SavedModel (``saved_model.pb`` or ``saved_model.pbtxt`` + ``variables/``).

Predictions go through the signature ``serving_default``, or the one named by the request's
``signature_name``. A signature with one input takes instances that are its values (nested
lists of numbers, or strings for a string input) or objects holding it under its name; one with
several inputs takes objects keyed by input name. A single output gives one value per instance;
several give one object per instance keyed by output alias (AI Platform's rule). ``{"b64": ...}``
inputs are decoded by the caller (`decode_b64`), as AI Platform does for TensorFlow; bytes
outputs come back as text, or ``{"b64": ...}`` when they are not UTF-8. ``probabilities`` does
not apply. ``input_gradients=K`` answers each instance's gradient of output ``K`` of a signature
with one input and one output instead (integrated gradients use it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

import numpy as np

from mlengine.prediction.predictors._base import (
    Framework,
    ModelLoadError,
    PredictionError,
    Predictor,
    TensorInput,
    TensorSignature,
    checked_example,
    error_detail,
    find_model_file,
    import_optional,
    input_arrays,
    inputs_example,
    load_failure,
    per_instance,
)
from mlengine.prediction.predictors._gradients import (
    check_output_index,
    tensorflow_input_gradients,
)

__all__ = ["TensorFlowPredictor"]

_LIBRARY = "tensorflow"
DEFAULT_SIGNATURE = "serving_default"


def _tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return import_optional("tensorflow", framework="TENSORFLOW", extra="tensorflow")


class _Signature:
    """One serving signature: its concrete function and its inputs."""

    def __init__(self, function: Any) -> None:
        tf = _tensorflow()
        self.function = function
        specs = dict(function.structured_input_signature[1])
        self.inputs = [
            TensorInput(
                name,
                None
                if spec.shape.rank is None
                else tuple(None if size is None else int(size) for size in spec.shape[1:]),
                object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype,
            )
            for name, spec in sorted(specs.items())
        ]
        outputs = getattr(function, "structured_outputs", None)
        named = outputs if isinstance(outputs, dict) else {}
        self.outputs = tuple(str(name) for name in named)
        self.output_dtypes = tuple(_numpy_dtype(spec) for spec in named.values())


class TensorFlowPredictor(Predictor):
    """Serves a TensorFlow SavedModel through its serving signatures."""

    framework = Framework.TENSORFLOW
    model_files = ("saved_model.pb", "saved_model.pbtxt")

    def __init__(self, loaded: Any, model_dir: str | os.PathLike[str] | None = None) -> None:
        self.loaded = loaded  # the signatures' functions need the object alive
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.signatures: dict[str, _Signature] = {
            str(name): _Signature(function) for name, function in loaded.signatures.items()
        }
        self._example: list[Any] | None = None
        self._example_derived = False

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load the SavedModel in `model_dir` (tag ``serve``).

        Raises:
            ModelLoadError: no SavedModel, one TensorFlow cannot load, or one without
                signatures.
            MissingDependency: tensorflow is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        tf = _tensorflow()
        try:
            loaded = tf.saved_model.load(str(path.parent), tags=["serve"])
        except Exception as error:
            raise load_failure(path, error) from error
        if not loaded.signatures:
            raise ModelLoadError(
                f"The SavedModel in {path.parent} has no signatures: save it with "
                "signatures={'serving_default': ...}."
            )
        return cls(loaded, model_dir)

    def _signature(self, name: Any) -> _Signature:
        key = DEFAULT_SIGNATURE if name is None else str(name)
        if key not in self.signatures:
            if name is None and len(self.signatures) == 1:
                return next(iter(self.signatures.values()))
            raise PredictionError.during(
                _LIBRARY,
                f"the model has no signature {key!r} (it has {sorted(self.signatures)})",
            )
        return self.signatures[key]

    def tensor_signature(self, **kwargs: Any) -> TensorSignature:
        """The inputs and outputs of the signature ``signature_name`` (default
        ``serving_default``).

        Raises:
            PredictionError: no such signature.
        """
        signature = self._signature(kwargs.get("signature_name"))
        return TensorSignature(tuple(signature.inputs), signature.outputs, signature.output_dtypes)

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """The signature's outputs, one per instance; ``signature_name`` picks the signature.

        Raises:
            PredictionError: an unknown signature, a malformed instance, or TensorFlow raised.
        """
        if len(instances) == 0:
            return []
        tf = _tensorflow()
        signature = self._signature(kwargs.get("signature_name"))
        arrays = input_arrays(instances, signature.inputs, _LIBRARY)
        if kwargs.get("input_gradients") is not None:
            return _input_gradients(signature, arrays, kwargs["input_gradients"])
        try:
            tensors = {name: tf.constant(array) for name, array in arrays.items()}
            outputs = signature.function(**tensors)
        except Exception as error:
            raise PredictionError.during(_LIBRARY, error_detail(error)) from error
        if isinstance(outputs, dict):
            outputs = {str(name): _numpy(value) for name, value in outputs.items()}
        else:
            outputs = _numpy(outputs)
        return per_instance(outputs, len(instances), _LIBRARY)

    def model_example_instances(self) -> list[Any] | None:
        """Zeros of the default signature's input shapes, when every size but the batch is
        known."""
        if not self._example_derived:
            try:
                example = inputs_example(self._signature(None).inputs)
            except PredictionError:
                example = None
            self._example = checked_example(self, example)
            self._example_derived = True
        return self._example


def _input_gradients(signature: _Signature, arrays: dict[str, Any], output: Any) -> list[Any]:
    """Per instance, the gradient of output `output` of the signature's one output with
    respect to its one input (``input_gradients=K``: integrated gradients use it)."""
    index = check_output_index(output, len(arrays))
    ((name, array),) = arrays.items()

    def call(tensor: Any) -> Any:
        outputs = signature.function(**{name: tensor})
        if isinstance(outputs, dict):
            if len(outputs) != 1:
                raise TypeError(f"the signature has {len(outputs)} outputs, not one")
            (outputs,) = outputs.values()
        return outputs

    try:
        return tensorflow_input_gradients(call, array, index)
    except Exception as error:
        raise PredictionError.during(_LIBRARY, error_detail(error)) from error


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def _numpy_dtype(spec: Any) -> Any:
    """The numpy dtype of a TensorSpec, or None (a string or a dtype numpy lacks)."""
    try:
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
    except (AttributeError, TypeError):
        return None
    return None if dtype.kind in "OSU" else dtype

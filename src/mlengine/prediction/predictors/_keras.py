"""KERAS: a Keras 3 model in ``model.keras``.

Keras runs on the torch backend unless ``KERAS_BACKEND`` says otherwise (with TensorFlow
installed, Keras would pick TensorFlow, which is slower to start). The model is loaded with
``compile=False``: serving needs no optimizer. A model with one input takes (nested) lists of
numbers; a model with several takes objects keyed by input name. A single output gives one row
per instance; several give one object per instance keyed by output name. The model's outputs are
returned as they are (a softmax output already holds probabilities): ``probabilities`` does not
apply. ``input_gradients=K`` answers each instance's gradient of output ``K`` instead (torch and
TensorFlow backends; integrated gradients use it).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np

from mlengine.prediction.predictors._base import (
    Framework,
    PredictionError,
    Predictor,
    TensorInput,
    TensorSignature,
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
    torch_input_gradients,
)

__all__ = ["KerasPredictor"]

_LIBRARY = "keras"


def _keras() -> Any:
    if "keras" not in sys.modules:
        if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("torch") is not None:
            os.environ["KERAS_BACKEND"] = "torch"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return import_optional("keras", framework="KERAS", extra="keras")


class KerasPredictor(Predictor):
    """Serves a Keras 3 model saved as ``model.keras``."""

    framework = Framework.KERAS
    model_files = ("model.keras",)

    def __init__(self, model: Any, model_dir: str | os.PathLike[str] | None = None) -> None:
        keras = _keras()
        self.model = model
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.backend: str = keras.backend.backend()
        self.inputs = [
            TensorInput(
                str(tensor.name),
                tuple(None if size is None else int(size) for size in tensor.shape[1:]),
                np.dtype(str(tensor.dtype)),
            )
            for tensor in model.inputs
        ]
        names = getattr(model, "output_names", None)  # a Sequential model has none
        self.output_names: list[str] = (
            [str(name) for name in names]
            if names
            else [_layer_name(tensor) for tensor in getattr(model, "outputs", None) or []]
        )
        self._signature = TensorSignature(
            tuple(self.inputs),
            tuple(self.output_names),
            tuple(_numpy_dtype(tensor) for tensor in getattr(model, "outputs", None) or []),
        )

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load ``model.keras`` with ``keras.saving.load_model(compile=False)``.

        Raises:
            ModelLoadError: no model file, or one Keras cannot load.
            MissingDependency: keras is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        keras = _keras()
        try:
            model = keras.saving.load_model(str(path), compile=False)
        except Exception as error:
            raise load_failure(path, error) from error
        return cls(model, model_dir)

    def tensor_signature(self, **kwargs: Any) -> TensorSignature:
        """The model's inputs, output names and output dtypes (read once, at load)."""
        return self._signature

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """The model's outputs, one per instance (``probabilities`` does not apply).

        Raises:
            PredictionError: a malformed instance, or the model raised.
        """
        if len(instances) == 0:
            return []
        arrays = input_arrays(instances, self.inputs, _LIBRARY)
        if kwargs.get("input_gradients") is not None:
            return self._input_gradients(arrays, kwargs["input_gradients"])
        try:
            outputs = self._call(arrays)
        except Exception as error:
            raise PredictionError.during(_LIBRARY, error_detail(error)) from error
        if isinstance(outputs, (list, tuple)):
            if len(outputs) == len(self.output_names):
                outputs = dict(zip(self.output_names, outputs, strict=True))
            else:
                outputs = tuple(outputs)
        return per_instance(outputs, len(instances), _LIBRARY)

    def _input_gradients(self, arrays: dict[str, np.ndarray], output: Any) -> list[Any]:
        """Per instance, the gradient of its output `output` with respect to it."""
        index = check_output_index(output, len(arrays))
        (array,) = arrays.values()
        gradients = {"torch": torch_input_gradients, "tensorflow": tensorflow_input_gradients}
        if self.backend not in gradients:
            raise PredictionError(
                f"Prediction failed: input gradients need Keras on the torch or tensorflow "
                f"backend; this one runs on {self.backend}."
            )
        try:
            return gradients[self.backend](
                lambda tensor: self.model(tensor, training=False), array, index
            )
        except Exception as error:
            raise PredictionError.during(_LIBRARY, error_detail(error)) from error

    def _call(self, arrays: dict[str, np.ndarray]) -> Any:
        if self.backend == "torch":
            # Call the model on tensors: predict_on_batch converts through np.array(tensor),
            # which warns under numpy 2.
            import torch

            tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
            with torch.inference_mode():
                outputs = self.model(_single(tensors), training=False)
            return _to_numpy(outputs)
        keras = _keras()
        outputs = self.model(_single(arrays), training=False)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)

    def model_example_instances(self) -> list[Any] | None:
        """Zeros of the input shape(s), when every size but the batch is known."""
        return inputs_example(self.inputs)


def _single(inputs: dict[str, Any]) -> Any:
    return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def _to_numpy(outputs: Any) -> Any:
    if hasattr(outputs, "detach"):
        return outputs.detach().cpu().numpy()
    if isinstance(outputs, Mapping):
        return {str(key): _to_numpy(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [_to_numpy(value) for value in outputs]
    return outputs


def _layer_name(tensor: Any) -> str:
    """The name of the layer that makes `tensor` (saved with the model, unlike the tensor's
    own ``keras_tensor_N``, numbered in the order a process builds tensors)."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    name = getattr(operation, "name", None)
    return str(name) if name else str(tensor.name)


def _numpy_dtype(tensor: Any) -> Any:
    """The numpy dtype of a Keras tensor, or None when numpy has none for it."""
    try:
        return np.dtype(str(tensor.dtype))
    except TypeError:
        return None

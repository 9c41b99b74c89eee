"""ONNX: a model in ``model.onnx``, run by onnxruntime on the CPU.

A model with one input takes (nested) lists of numbers (or strings, for a string input); a
model with several named inputs (e.g. a scikit-learn pipeline converted by skl2onnx with one
input per column) takes objects keyed by input name, and a scalar value fills a ``[None, 1]``
input. Missing values (``null``, NaN) are refused: nothing in an ONNX graph says whether it takes
them. A single output gives one row per instance; several give one object per instance keyed by
output name.

skl2onnx classifiers have a label output and a probability output (``output_label`` and
``output_probability``, or ``label`` and ``probabilities``): they give the labels, or with
``probabilities=True`` one row of class probabilities per instance (a ZipMap output is turned
into rows in class order).

The session runs one intra-op thread by default: the server gets its parallelism from several
versions and from batching, not from threads fighting over cores.
"""

from __future__ import annotations

import os
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
    checked_example,
    error_detail,
    find_model_file,
    import_optional,
    input_arrays,
    inputs_example,
    load_failure,
    per_instance,
)

__all__ = ["ONNXPredictor"]

_LIBRARY = "onnx"
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


def _onnxruntime() -> Any:
    return import_optional("onnxruntime", framework="ONNX", extra="onnx")


def _instance_shape(shape: Any) -> tuple[int | None, ...] | None:
    if shape is None or len(shape) == 0:
        return None
    return tuple(size if isinstance(size, int) and size > 0 else None for size in shape[1:])


class ONNXPredictor(Predictor):
    """Serves ``model.onnx`` with an onnxruntime ``InferenceSession`` (CPU)."""

    framework = Framework.ONNX
    model_files = ("model.onnx",)

    def __init__(self, session: Any, model_dir: str | os.PathLike[str] | None = None) -> None:
        self.session = session
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.inputs = [
            TensorInput(node.name, _instance_shape(node.shape), _DTYPES.get(node.type, np.float32))
            for node in session.get_inputs()
        ]
        self.output_names: list[str] = [node.name for node in session.get_outputs()]
        self._output_dtypes = {  # None where numpy has no dtype for it (strings, maps)
            node.name: None if _DTYPES.get(node.type) in (None, object) else _DTYPES[node.type]
            for node in session.get_outputs()
        }
        self._label, self._probabilities = _classifier_outputs(self.output_names)
        self._example: list[Any] | None = None
        self._example_derived = False

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str], *, intra_op_threads: int = 1) -> Self:
        """Load ``model.onnx`` into a CPU ``InferenceSession``.

        Args:
            model_dir: the local version directory.
            intra_op_threads: threads onnxruntime may use inside one operator.

        Raises:
            ModelLoadError: no model file, or one onnxruntime cannot load.
            MissingDependency: onnxruntime is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no warnings on stderr per session
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise load_failure(path, error) from error
        return cls(session, model_dir)

    @property
    def is_classifier(self) -> bool:
        """True for a model with a label output and a probability output (skl2onnx)."""
        return self._label is not None

    def tensor_signature(self, **kwargs: Any) -> TensorSignature:
        """The session's inputs, and the outputs `predict` returns for `kwargs`: a classifier's
        label output (its probability output with ``probabilities=True``), else all."""
        outputs = self.output_names
        if self._label is not None and self._probabilities is not None:
            outputs = [self._probabilities if kwargs.get("probabilities") else self._label]
        dtypes = tuple(self._output_dtypes[name] for name in outputs)
        return TensorSignature(tuple(self.inputs), tuple(outputs), dtypes)

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """Labels, probability rows (``probabilities=True``) or the model's outputs.

        Raises:
            PredictionError: a malformed instance, probabilities asked of a model without a
                probability output, or onnxruntime raised.
        """
        if len(instances) == 0:
            return []
        want_probabilities = bool(kwargs.get("probabilities"))
        if want_probabilities and self._probabilities is None:
            raise PredictionError.during(
                _LIBRARY,
                "probabilities were requested, but the model has no probability output "
                f"(its outputs are {self.output_names})",
            )
        feeds = input_arrays(instances, self.inputs, _LIBRARY)
        wanted = self.output_names
        if self._label is not None and self._probabilities is not None:
            wanted = [self._probabilities if want_probabilities else self._label]
        try:
            results = self.session.run(wanted, feeds)
        except Exception as error:
            raise PredictionError.during(_LIBRARY, error_detail(error)) from error
        if want_probabilities:
            return per_instance(_probability_rows(results[0]), len(instances), _LIBRARY)
        if len(results) == 1:
            return per_instance(results[0], len(instances), _LIBRARY)
        return per_instance(dict(zip(wanted, results, strict=True)), len(instances), _LIBRARY)

    def model_example_instances(self) -> list[Any] | None:
        """Zeros (or empty strings) of the input shapes, when the model fixes every size but
        the batch, and the model answers them."""
        if not self._example_derived:
            self._example = checked_example(self, inputs_example(self.inputs))
            self._example_derived = True
        return self._example

    def close(self) -> None:
        """Drop the session."""
        self.session = None


def _classifier_outputs(names: list[str]) -> tuple[str | None, str | None]:
    """The (label, probabilities) output names of a skl2onnx classifier, or (None, None)."""
    if len(names) != 2:
        return None, None
    label = next((name for name in names if "label" in name.lower()), None)
    probabilities = next((name for name in names if "probab" in name.lower()), None)
    if label is None or probabilities is None or label == probabilities:
        return None, None
    return label, probabilities


def _probability_rows(output: Any) -> Any:
    """ZipMap output (one ``{class: probability}`` per instance) as rows in class order."""
    if isinstance(output, list) and output and isinstance(output[0], Mapping):
        return [[row[key] for key in row] for row in output]
    return output

"""PYTORCH: a ``torch.export`` program in ``model.pt2`` (preferred) or a TorchScript module in
``model.pt``.

``model.pt2`` should be exported with a dynamic batch dimension
(``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``); its input shapes and dtypes are
known, so instances are checked up front and an example instance can be derived. A TorchScript
module's inputs are unknown until it runs. Inputs are float32 unless the exported program says
otherwise.

A model with one input takes instances that are (nested) lists of numbers; a model with several
takes objects keyed by input name (the argument names of ``forward``), and gets them in that
order. Outputs: a tensor gives one row per instance; a tuple or a dict of tensors gives one object
per instance keyed by ``output_0``, ``output_1``... or the dict's keys. The model's outputs are
returned as they are: ``probabilities`` does not apply.
"""

from __future__ import annotations

import os
import warnings
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
    first_failing_instance,
    import_optional,
    input_arrays,
    inputs_example,
    load_failure,
    per_instance,
)
from mlengine.prediction.predictors._gradients import check_output_index, torch_input_gradients

__all__ = ["PyTorchPredictor"]

_LIBRARY = "pytorch"


def _torch() -> Any:
    return import_optional("torch", framework="PYTORCH", extra="torch")


def _exported_inputs(program: Any) -> list[TensorInput]:
    """The user inputs of an ExportedProgram, from the fake tensors of its placeholders."""
    torch = _torch()
    names = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    inputs = []
    for name in names:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        if not isinstance(value, torch.Tensor):
            inputs.append(TensorInput(name, None, np.float32))
            continue
        shape = tuple(size if isinstance(size, int) else None for size in value.shape[1:])
        try:
            dtype = torch.empty((), dtype=value.dtype).numpy().dtype
        except TypeError:  # no numpy equivalent (bfloat16...): send float32, the model casts
            dtype = np.dtype(np.float32)
        inputs.append(TensorInput(name, shape, dtype))
    return inputs


class PyTorchPredictor(Predictor):
    """Serves a ``torch.export`` program (``model.pt2``) or a TorchScript module (``model.pt``)."""

    framework = Framework.PYTORCH
    model_files = ("model.pt2", "model.pt")

    def __init__(
        self,
        module: Any,
        inputs: list[TensorInput],
        model_dir: str | os.PathLike[str] | None = None,
        *,
        torchscript: bool = False,
    ) -> None:
        self.module = module
        self.inputs = inputs
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.torchscript = torchscript

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> Self:
        """Load ``model.pt2`` (``torch.export.load``) or ``model.pt`` (``torch.jit.load``).

        Raises:
            ModelLoadError: no model file, or one torch cannot load.
            MissingDependency: torch is not installed.
        """
        path = find_model_file(model_dir, cls.model_files)
        torch = _torch()
        try:
            if path.suffix == ".pt2":
                program = torch.export.load(str(path))
                return cls(program.module(), _exported_inputs(program), model_dir)
            with warnings.catch_warnings():
                # torch.jit.load is deprecated in favour of torch.export, but still loads.
                warnings.filterwarnings(
                    "ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning
                )
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise load_failure(path, error) from error
        module.eval()
        return cls(module, [TensorInput("input", None, np.float32)], model_dir, torchscript=True)

    def tensor_signature(self, **kwargs: Any) -> TensorSignature | None:
        """A ``torch.export`` program's inputs (its outputs have no names); None for
        TorchScript, which declares no inputs."""
        return None if self.torchscript else TensorSignature(tuple(self.inputs))

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """The model's outputs, one per instance (``probabilities`` does not apply). With
        ``input_gradients=K``: instead, the gradient of each instance's output ``K`` (of its
        flattened output) with respect to the instance, shaped as the instance (integrated
        gradients use it).

        Raises:
            PredictionError: a malformed instance, or the model raised.
        """
        if len(instances) == 0:
            return []
        if kwargs.get("input_gradients") is not None:
            return self._input_gradients(instances, kwargs["input_gradients"])
        torch = _torch()
        arrays = list(input_arrays(instances, self.inputs, _LIBRARY).values())

        def run(start: int, stop: int) -> Any:
            with torch.inference_mode():
                return self.module(*(torch.from_numpy(array[start:stop]) for array in arrays))

        try:
            outputs = run(0, len(instances))
        except Exception as error:
            # a TorchScript module declares no input shape: what the model raised on names the
            # instance, found by predicting parts of the batch again
            failing = first_failing_instance(run, len(instances))
            if failing is None:
                raise PredictionError.during(_LIBRARY, self._detail(error)) from error
            index, alone = failing
            raise PredictionError.during(
                _LIBRARY, self._detail(alone), instance_index=index
            ) from error
        return per_instance(_to_numpy(outputs, torch), len(instances), _LIBRARY)

    def _input_gradients(self, instances: list[Any], output: Any) -> list[Any]:
        index = check_output_index(output, len(self.inputs))
        (array,) = input_arrays(instances, self.inputs, _LIBRARY).values()
        try:
            return torch_input_gradients(self.module, array, index)
        except Exception as error:
            raise PredictionError.during(_LIBRARY, self._detail(error)) from error

    def _detail(self, error: BaseException) -> str:
        if self.torchscript:  # the interpreter's traceback first, the actual error last
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            if lines:
                return error_detail(RuntimeError(lines[-1]))
        return error_detail(error)

    def model_example_instances(self) -> list[Any] | None:
        """Zeros of the input shape(s), when every size but the batch is known."""
        return inputs_example(self.inputs)


def _to_numpy(outputs: Any, torch: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach().cpu().numpy()
    if isinstance(outputs, Mapping):
        return {str(key): _to_numpy(value, torch) for key, value in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return tuple(_to_numpy(value, torch) for value in outputs)
    return outputs

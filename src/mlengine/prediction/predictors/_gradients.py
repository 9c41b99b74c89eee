"""Input gradients for integrated gradients: the ``input_gradients=K`` predict option of the
differentiable built-in predictors (PyTorch, and Keras on the torch or TensorFlow backend)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlengine.prediction.predictors._base import PredictionError

__all__ = ["check_output_index", "tensorflow_input_gradients", "torch_input_gradients"]


def check_output_index(output: Any, inputs: int) -> int:
    """The output index of an ``input_gradients`` option, for a model with `inputs` inputs.

    Raises:
        PredictionError: not an integer >= 0, or a model with several inputs.
    """
    if inputs != 1:
        raise PredictionError(
            f"Prediction failed: input gradients need a model with one input; this one has "
            f"{inputs}."
        )
    if isinstance(output, bool) or not isinstance(output, int) or output < 0:
        raise PredictionError(
            f"Prediction failed: input_gradients must be an output index >= 0; got {output!r}."
        )
    return output


def _selected(flat: Any, output: int) -> Any:
    if output >= flat.shape[1]:
        count = flat.shape[1]
        raise IndexError(
            f"there is no output {output}: the model has {count} output(s) per instance "
            f"(0 to {count - 1})"
        )
    return flat[:, output]


def torch_input_gradients(call: Callable[[Any], Any], array: np.ndarray, output: int) -> list[Any]:
    """Per instance, the gradient of output `output` (of its flattened output) of
    ``call(tensor)`` with respect to the instance (float64, the instance's shape).

    Raises:
        Exception: what the model raised, or TypeError for an output that is not one tensor.
    """
    import torch

    tensor = torch.from_numpy(np.asarray(array, dtype=np.float32)).requires_grad_(True)
    with torch.enable_grad():
        outputs = call(tensor)
        if not isinstance(outputs, torch.Tensor):
            raise TypeError("the model's output is not one tensor")
        selected = _selected(outputs.reshape(len(array), -1), output)
        (gradient,) = torch.autograd.grad(selected.sum(), tensor)
    return list(gradient.detach().numpy().astype(np.float64))


def tensorflow_input_gradients(
    call: Callable[[Any], Any], array: np.ndarray, output: int
) -> list[Any]:
    """`torch_input_gradients` for a model that runs on TensorFlow tensors."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(np.asarray(array, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        outputs = call(tensor)
        if not tf.is_tensor(outputs):
            raise TypeError("the model's output is not one tensor")
        total = tf.reduce_sum(_selected(tf.reshape(outputs, (len(array), -1)), output))
    gradient = tape.gradient(total, tensor)  # (the sum is taken on the tape: it is recorded)
    if gradient is None:
        raise TypeError("the model's output does not depend on its input differentiably")
    return list(np.asarray(gradient, dtype=np.float64))

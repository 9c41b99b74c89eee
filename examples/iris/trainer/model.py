"""The PyTorch iris classifier and its `torch.export` packaging, shared by task and ddp_task."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import common

EXPORT_FILENAME = "model.pt2"
METADATA_FILENAME = "metadata.json"
EXPORT_OUTPUT = "probabilities"
"""What the exported program returns: softmax class probabilities, shape (batch, n_classes)."""


def hidden_units(value: str) -> list[int]:
    """Parse ``--hidden-units``: a comma separated list of positive layer widths ("10,20,10").

    Raises:
        argparse.ArgumentTypeError: the value is not such a list.
    """
    try:
        units = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma separated integers, got {value!r}"
        ) from None
    if not units or any(unit <= 0 for unit in units):
        raise argparse.ArgumentTypeError(f"expected positive layer widths, got {value!r}")
    return units


class IrisDNN(nn.Module):
    """A feed-forward classifier that standardises its raw input itself.

    The feature mean and scale of the training split are buffers, so the module (and the
    program exported from it) takes raw, unscaled iris features.

    Args:
        mean: per-feature mean of the training split.
        scale: per-feature standard deviation of the training split (zeros replaced by 1).
        hidden: the width of each hidden layer.
        n_classes: the number of classes (logits per row).
    """

    def __init__(
        self, mean: np.ndarray, scale: np.ndarray, hidden: Sequence[int], n_classes: int
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = len(mean)
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits for raw features `x` of shape (batch, 4)."""
        return self.layers((x - self.mean) / self.scale)


class Probabilities(nn.Module):
    """Wraps a logits model so that it returns softmax class probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class probabilities for raw features `x`, shape (batch, n_classes)."""
        return torch.softmax(self.model(x), dim=-1)


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (mean, scale) that standardise `x_train`, like sklearn's StandardScaler."""
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale == 0] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return (accuracy, mean cross-entropy loss) of `model` on raw features `x`, labels `y`."""
    model.eval()
    logits = model(torch.from_numpy(x))
    labels = torch.from_numpy(y)
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).sum().item() / len(labels)
    return float(accuracy), float(loss)


def export(model: nn.Module, example: np.ndarray, directory: str, metadata: dict[str, Any]) -> str:
    """Export `model` (wrapped to return probabilities) to ``<directory>/model.pt2``.

    The batch dimension is dynamic, so the program loaded with
    ``torch.export.load(path).module()`` predicts any number of rows. ``metadata.json`` is
    written next to it.

    Args:
        model: the trained logits model; it must standardise raw features itself.
        example: a few raw feature rows (at least 2) to trace with.
        directory: the model directory (local path or URL).
        metadata: the contents of ``metadata.json``.

    Returns:
        The path of the exported program.
    """
    model.eval()
    program = torch.export.export(
        Probabilities(model),
        (torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}},
    )
    path = common.join(directory, EXPORT_FILENAME)
    with common.open_output(path, "wb") as handle:
        torch.export.save(program, handle)
    common.write_json(common.join(directory, METADATA_FILENAME), metadata)
    return path


def metadata(
    split: common.IrisSplit, accuracy: float, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build ``metadata.json`` for an exported PyTorch model."""
    return {
        "framework": "PYTORCH",
        "classes": split.class_names,
        "feature_names": split.feature_names,
        "accuracy": accuracy,
        "output": EXPORT_OUTPUT,
        "input": "raw float32 features, shape (batch, 4), in feature_names order",
        **(extra or {}),
    }

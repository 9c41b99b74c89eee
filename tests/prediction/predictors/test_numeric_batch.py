"""numeric_batch: instances become one array of the model's dtype, never changed on the way."""

from __future__ import annotations

import numpy as np
import pytest

from mlengine.prediction.predictors import PredictionError
from mlengine.prediction.predictors._base import numeric_batch


def test_whole_numbers_become_integers() -> None:
    array = numeric_batch([[1.0, 2, 3], [4, 5, 6.0]], "onnx", dtype=np.int64)
    assert array.dtype == np.int64 and array.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("instances", "dtype", "index", "shown"),
    [
        ([[1, 2, 3], [1.5, 2, 3]], np.int64, 1, "1.5"),
        ([[1, 2, 1e30]], np.int64, 0, "1e\\+30"),
        ([[1, -1, 3]], np.uint8, 0, "-1.0"),
        ([[300.0, 1, 1]], np.int8, 0, "300.0"),
    ],
)
def test_numbers_an_integer_input_cannot_hold_are_refused(
    instances: list[list[float | None]], dtype: type, index: int, shown: str
) -> None:
    """A cast would cut 1.5 to 1 without a word (TF Serving and Triton refuse it too)."""
    with pytest.raises(PredictionError, match=rf"instance {index}: .* numbers here; got {shown}"):
        numeric_batch(instances, "tensorflow", dtype=dtype)

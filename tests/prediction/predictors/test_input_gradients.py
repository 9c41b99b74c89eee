"""The ``input_gradients=K`` predict option of the differentiable predictors: each instance's
gradient of output K, checked against central finite differences of the predictor's own
outputs (the ReLU kinks of the models are far from the points checked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlengine.prediction.predictors import load_predictor
from mlengine.prediction.predictors._base import PredictionError
from tests.prediction.predictors.conftest import (
    build_keras,
    build_pytorch_pt2,
    build_tensorflow,
    iris_data,
)

ROWS = iris_data()[0][[0, 60, 120]].astype(np.float64)


def _finite_differences(predictor: object, output: int, step: float = 1e-2) -> np.ndarray:
    gradients = np.zeros_like(ROWS)
    for feature in range(ROWS.shape[1]):
        shift = np.zeros(ROWS.shape[1])
        shift[feature] = step
        up = np.asarray(predictor.predict((ROWS + shift).tolist()))[:, output]  # type: ignore[attr-defined]
        down = np.asarray(predictor.predict((ROWS - shift).tolist()))[:, output]  # type: ignore[attr-defined]
        gradients[:, feature] = (up - down) / (2 * step)
    return gradients


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(build_pytorch_pt2, id="pytorch-pt2"),
        pytest.param(build_keras, id="keras", marks=pytest.mark.slow),
        pytest.param(build_tensorflow, id="tensorflow", marks=pytest.mark.slow),
    ],
)
def test_input_gradients_match_finite_differences(build: object, tmp_path: Path) -> None:
    build(tmp_path)  # type: ignore[operator]
    predictor = load_predictor(tmp_path)
    try:
        for output in range(3):
            gradients = np.asarray(predictor.predict(ROWS.tolist(), input_gradients=output))
            assert gradients.shape == ROWS.shape
            assert np.allclose(gradients, _finite_differences(predictor, output), atol=2e-3)
        with pytest.raises(PredictionError, match=r"no output 3: .* 3 output\(s\) .*\(0 to 2\)"):
            predictor.predict(ROWS.tolist(), input_gradients=3)
        with pytest.raises(PredictionError, match="output index >= 0"):
            predictor.predict(ROWS.tolist(), input_gradients="first")
    finally:
        predictor.close()


def test_a_version_with_a_preprocessor_refuses_input_gradients(tmp_path: Path) -> None:
    """Its model's gradients would be those of the transformed features, not the instances'."""
    import joblib
    from sklearn.preprocessing import StandardScaler

    build_pytorch_pt2(tmp_path)
    joblib.dump(StandardScaler().fit(iris_data()[0]), tmp_path / "preprocessor.joblib")
    predictor = load_predictor(tmp_path)
    try:
        assert len(predictor.predict(ROWS.tolist())) == 3
        with pytest.raises(PredictionError, match=r"'input_gradients' .* preprocessor\.joblib"):
            predictor.predict(ROWS.tolist(), input_gradients=0)
    finally:
        predictor.close()

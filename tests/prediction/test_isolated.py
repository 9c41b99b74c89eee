"""IsolatedPredictor's worker process, driven with this interpreter and a class in the model
directory: a model that never loads is stopped, a worker that dies starts again."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mlengine._processes import child_pids
from mlengine.errors import OperationFailed
from mlengine.prediction._isolated import IsolatedPredictor
from mlengine.prediction.predictors import ModelLoadError

CLASSES = """
import os
import time


class Hang:
    @classmethod
    def from_path(cls, model_dir):
        time.sleep(600)

    def predict(self, instances, **kwargs):
        return instances


class Doubler:
    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        if kwargs.get("die"):
            os._exit(3)
        return [2 * instance for instance in instances]
"""


def _workers() -> list[int]:
    found = []
    for pid in child_pids(os.getpid()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"mlengine.prediction._worker" in command:
            found.append(pid)
    return found


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "classes.py").write_text(CLASSES)
    return tmp_path


def test_a_model_that_never_loads_is_stopped(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"from_path did not return within 1 s"):
        IsolatedPredictor.start(
            sys.executable, model_dir, prediction_class="classes.Hang", load_timeout_s=1
        )
    assert _workers() == []


def test_a_worker_that_died_starts_again_until_it_is_closed(model_dir: Path) -> None:
    predictor = IsolatedPredictor.start(
        sys.executable, model_dir, prediction_class="classes.Doubler"
    )
    try:
        assert predictor.predict([1, 2]) == [2, 4]
        with pytest.raises(OperationFailed, match=r"exit status 3\) while predicting"):
            predictor.predict([1], die=True)
        assert predictor.predict([5]) == [10]  # a new worker
        assert len(_workers()) == 1
    finally:
        predictor.close()
    assert _workers() == []
    with pytest.raises(OperationFailed, match="stopped"):
        predictor.predict([1])  # closed: not started again

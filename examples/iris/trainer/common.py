"""Helpers shared by the iris trainers: data, output locations, JSON files and hypertune.

This module imports neither torch nor scikit-learn's estimators at import time, so the
scikit-learn trainer does not pay for torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

TEST_SIZE = 0.2
"""Fraction of the 150 iris rows held out for evaluation (stratified)."""


@dataclasses.dataclass(frozen=True)
class IrisSplit:
    """The iris data set split into train and test parts.

    Attributes:
        x_train: raw training features, float32, shape (120, 4).
        y_train: training labels (0, 1, 2), int64.
        x_test: raw test features, float32, shape (30, 4).
        y_test: test labels, int64.
        class_names: the label names, indexed by label.
        feature_names: the four feature names, in column order.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    feature_names: list[str]


def load_split(seed: int) -> IrisSplit:
    """Load scikit-learn's bundled iris data and split it 80/20, stratified by class.

    Args:
        seed: the `random_state` of the split; the same seed gives the same split.

    Returns:
        The split, features as float32 and labels as int64.
    """
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    x = np.asarray(iris.data, dtype=np.float32)
    y = np.asarray(iris.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=seed
    )
    return IrisSplit(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=[str(name) for name in iris.target_names],
        feature_names=[str(name) for name in iris.feature_names],
    )


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path.removeprefix("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts under `base`, which may be a local path or a URL (``gs://b/dir``)."""
    if _is_url(base):
        return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts if part)])
    return os.path.join(_local(base), *(part for part in parts if part))


def _tf_config_task() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError:
        return {}
    task = config.get("task") if isinstance(config, dict) else None
    return task if isinstance(task, dict) else {}


def trial_id() -> str:
    """Return the HP tuning trial id from ``TF_CONFIG``'s ``task.trial``, or "" outside tuning."""
    return str(_tf_config_task().get("trial") or "")


def task_type() -> str:
    """Return ``TF_CONFIG``'s ``task.type`` (``master``, ``worker``, ``ps``...), or ""."""
    return str(_tf_config_task().get("type") or "")


def output_dir(job_dir: str) -> str:
    """Return where this run writes its outputs: `job_dir`, plus the trial id when tuning.

    AI Platform's documented convention is that each hyperparameter tuning trial writes
    under ``<job-dir>/<trial id>`` so that trials do not overwrite each other.
    """
    return join(job_dir, trial_id())


def model_dir(out_dir: str) -> str:
    """Return where the model is exported: ``$AIP_MODEL_DIR`` when set, else ``<out>/model``."""
    return os.environ.get("AIP_MODEL_DIR") or join(out_dir, "model")


@contextlib.contextmanager
def open_output(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open `path` for writing, creating parent directories; URLs go through fsspec.

    Args:
        path: a local path, a ``file://`` URL or any URL fsspec can write (``gs://``...).
        mode: ``"wb"`` or ``"w"``.

    Yields:
        The open file.
    """
    if _is_url(path):
        import fsspec

        with fsspec.open(path, mode) as handle:
            yield handle
        return
    local = _local(path)
    os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
    encoding = None if "b" in mode else "utf-8"
    with open(local, mode, encoding=encoding) as handle:
        yield handle


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write `payload` as indented JSON to `path` (local or URL)."""
    with open_output(path, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def report_metric(tag: str, value: float, global_step: int) -> bool:
    """Report a hyperparameter tuning metric through `cloudml-hypertune`, when installed.

    The metric is appended to ``$CLOUD_ML_HP_METRIC_FILE`` (default
    ``/tmp/hypertune/output.metrics``), where the tuning service reads it.

    Args:
        tag: the `hyperparameterMetricTag` of the tuning spec, e.g. ``"accuracy"``.
        value: the metric value.
        global_step: the training step the value belongs to.

    Returns:
        True if the metric was reported, False if the `hypertune` module is not importable.
    """
    try:
        import hypertune
    except ImportError:
        return False
    hypertune.HyperTune().report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=value, global_step=global_step
    )
    return True


def log(message: str) -> None:
    """Print a progress line to stdout and flush it, so the job log shows it at once."""
    print(message, flush=True)

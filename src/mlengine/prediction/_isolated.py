"""Versions whose code comes with them (a custom prediction class, or pickles of the trainer's
own classes) run in a worker process with the version's packages installed in an isolated
environment, so two versions never share (or break) each other's imports."""

from __future__ import annotations

import os
import select
import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson

from mlengine.errors import OperationFailed
from mlengine.prediction._worker import read_frame, write_frame
from mlengine.prediction.predictors import ModelLoadError, PredictionError, Predictor

__all__ = ["LOAD_TIMEOUT_S", "IsolatedPredictor"]

LOAD_TIMEOUT_S = 600.0
"""How long a worker may take to load its model (``from_path``) before it is stopped."""


class IsolatedPredictor(Predictor):
    """A `Predictor` that forwards to a worker process (`mlengine.prediction._worker`).

    Calls are serialised by a lock: the worker answers one request at a time (the batcher
    already calls a version from one thread).
    """

    framework = "CUSTOM"

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        framework: str,
        model_dir: Path,
        command: list[str] | None = None,
    ) -> None:
        self._process = process
        self._command = command
        self._closed = False
        self._lock = threading.Lock()
        self.framework = framework  # type: ignore[misc]
        self.model_dir = model_dir
        self._directory = model_dir

    @classmethod
    def from_path(cls, model_dir: str | os.PathLike[str]) -> IsolatedPredictor:
        """Not used: isolated predictors start through `start`."""
        raise TypeError("IsolatedPredictor starts with IsolatedPredictor.start(...)")

    @classmethod
    def start(
        cls,
        python: str,
        model_dir: Path,
        *,
        prediction_class: str | None = None,
        framework: str | None = None,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> IsolatedPredictor:
        """Start a worker with `python` (the version's environment) and wait until it loaded
        the model.

        Raises:
            ModelLoadError: the worker could not load the model or class, or did not within
                `load_timeout_s`.
        """
        # -P: the model directory (the worker's cwd) is not put first on sys.path, where its
        # files would shadow the version's packages; the worker appends it instead
        command = [python, "-P", "-m", "mlengine.prediction._worker", str(model_dir)]
        if prediction_class:
            command += ["--prediction-class", prediction_class]
        if framework:
            command += ["--framework", framework]
        process, loaded = _spawn(command, model_dir, load_timeout_s)
        return cls(process, loaded, model_dir, command)

    def predict(self, instances: list[Any], **kwargs: Any) -> list[Any]:
        """Forward to the worker; a worker that died is started again first.

        Raises:
            PredictionError: the predictor refused the instances or raised.
            OperationFailed: the worker died during the call, or could not start again.
        """
        with self._lock:
            if self._closed:
                raise OperationFailed(
                    f"The prediction worker of {self.model_dir} was stopped (unloaded)."
                )
            self._restart_if_stopped()
            assert self._process.stdin is not None and self._process.stdout is not None
            try:
                write_frame(self._process.stdin, {"instances": instances, "options": kwargs})
                reply = read_frame(self._process.stdout)
            except (BrokenPipeError, OSError):
                reply = None
        if reply is None:  # the worker died, or its channel broke: it is of no more use
            _dispose(self._process)
            raise OperationFailed(
                f"The prediction worker of {self.model_dir} stopped (exit status "
                f"{self._process.returncode}) while predicting; it starts again with the "
                "next request."
            )
        if "error" in reply:
            message = str(reply["error"])
            if not message.startswith("Prediction failed"):
                message = f"Prediction failed: {message}"
            raise PredictionError(message, instance_index=reply.get("instance_index"))
        return list(orjson.loads(reply["json"]))

    def _restart_if_stopped(self) -> None:
        if self._process.poll() is None or self._command is None:
            return
        _dispose(self._process)
        try:
            self._process, _ = _spawn(self._command, self._directory)
        except ModelLoadError as error:
            raise OperationFailed(
                f"The prediction worker of {self.model_dir} stopped and could not start "
                f"again: {error}"
            ) from error

    def example_instances(self) -> list[Any] | None:
        """Only ``input_example.json``: the worker's model is opaque to us."""
        from mlengine.prediction.predictors import read_input_example

        return read_input_example(self._directory)

    def close(self) -> None:
        """Stop the worker (closing its stdin ends its loop; one still busy after 10 s is
        killed, failing the call it held). It is not started again."""
        self._closed = True
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.close()
                self._process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _dispose(self._process)


def _spawn(
    command: list[str], model_dir: Path, load_timeout_s: float = LOAD_TIMEOUT_S
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a worker and wait until it loaded the model; (the process, its framework).

    Raises:
        ModelLoadError: the worker could not load the model or class, or did not within
            `load_timeout_s` (it is stopped).
    """
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, cwd=model_dir
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], load_timeout_s)
    if not ready:
        _dispose(process)
        raise ModelLoadError(
            f"Could not load the model in {model_dir}: from_path did not return within "
            f"{load_timeout_s:g} s."
        )
    hello = read_frame(process.stdout)
    if not isinstance(hello, dict) or "framework" not in hello:
        _dispose(process)
        reason = (
            hello.get("error")
            if isinstance(hello, dict)
            else f"the worker exited (exit status {process.returncode})"
        )
        raise ModelLoadError(f"Could not load the model in {model_dir}: {reason}")
    return process, str(hello["framework"])


def _dispose(process: subprocess.Popen[bytes]) -> None:
    """Kill `process` if it runs, reap it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()

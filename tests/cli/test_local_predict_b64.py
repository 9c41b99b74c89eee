"""``mlengine local predict`` decodes ``{"b64": ...}`` for TensorFlow as the server does
(AI Platform's rule for binary inputs)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _string_length_model(directory: Path) -> None:
    """A SavedModel whose ``serving_default`` answers the byte length of a string input."""
    import tensorflow as tf

    class Lengths(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> Any:
            return {"length": tf.strings.length(text)}

    module = Lengths()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})


@pytest.mark.integration
def test_local_predict_decodes_b64_for_tensorflow(run_cli: Cli, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    _string_length_model(model_dir)
    payloads = [b"abc", b"\x00\xff binary"]
    instances = tmp_path / "instances.json"
    instances.write_text(
        "\n".join(json.dumps({"b64": base64.b64encode(p).decode()}) for p in payloads) + "\n"
    )
    result = run_cli("local", "predict", "--model-dir", str(model_dir),
                     "--json-instances", str(instances), "--format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"predictions": [len(p) for p in payloads]}
    instances.write_text('{"b64": "not base64!"}\n')
    refused = run_cli("local", "predict", "--model-dir", str(model_dir),
                      "--json-instances", str(instances))  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith("ERROR: ") and "b64" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

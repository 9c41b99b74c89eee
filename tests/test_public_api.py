"""The public surface: `__all__` lists exactly the public names, and `import mlengine` is light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "mlengine",
    "mlengine.errors",
    "mlengine.config",
    "mlengine.data",
    "mlengine.store",
    "mlengine.jobs",
    "mlengine.jobs.runners",
    "mlengine.server",
    "mlengine.client",
    "mlengine.models",
    "mlengine.prediction",
    "mlengine.prediction.predictors",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    for attribute in exported:
        assert getattr(module, attribute) is not None
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and not isinstance(v, type(sys))
        and str(getattr(v, "__module__", "")).startswith(name)
    }
    assert public <= exported, f"public but not in __all__: {public - exported}"


def test_import_mlengine_does_not_import_heavy_frameworks() -> None:
    code = (
        "import sys, mlengine, mlengine.cli, mlengine.client, mlengine.server;"
        "heavy = [m for m in ('torch', 'apache_beam', 'ray', 'tensorflow') if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

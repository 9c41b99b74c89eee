"""mlengine.beam's public surface, and its import rules."""

from __future__ import annotations

import subprocess
import sys

import mlengine.beam


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(mlengine.beam).items()
        if not name.startswith("_")
        and not isinstance(value, type(sys))
        and str(getattr(value, "__module__", "")).startswith("mlengine.beam")
    }
    assert public <= set(mlengine.beam.__all__), public - set(mlengine.beam.__all__)
    assert all(getattr(mlengine.beam, name) is not None for name in mlengine.beam.__all__)


def test_missing_beam_is_a_missing_dependency() -> None:
    code = (
        "import sys; sys.modules['apache_beam'] = None\n"
        "try:\n"
        "    import mlengine.beam\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, '|', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kind, message = done.stdout.strip().split(" | ")
    assert kind == "MissingDependency"
    assert message.endswith("Install it with: pip install 'mlengine[beam]'")

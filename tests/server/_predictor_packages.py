"""Source packages of custom prediction classes, built as a user would for --package-uris."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mlengine.jobs._packaging import build_package

SCALED_SUM = '''
import os
import time

class ScalePredictor:
    """The sum of each instance times the number in scale.txt, plus OFFSET."""

    def __init__(self, scale):
        self.scale = scale

    @classmethod
    def from_path(cls, model_dir):
        time.sleep(LOAD_SECONDS)
        with open(os.path.join(model_dir, "scale.txt")) as handle:
            return cls(float(handle.read()))

    def predict(self, instances, **kwargs):
        return [self.scale * sum(instance) + OFFSET for instance in instances]
'''
SCALED_SUM_CLASS = "scale_predictor.predictor.ScalePredictor"


def build_source_package(
    root: Path, name: str, module: str, source: str, dist: Path | None = None
) -> Path:
    """An sdist of package `name` with `module` holding `source`, built under
    `root` into `dist` (default ``root/dist``): the same `dist` twice gives the same file
    name, rebuilt."""
    package = root / "src" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / f"{module}.py").write_text(textwrap.dedent(source))
    return build_package(package, dist or root / "dist")


def scaled_sum_package(
    root: Path, offset: float = 0, load_seconds: float = 0, dist: Path | None = None
) -> Path:
    """The `SCALED_SUM` predictor package with the given OFFSET and a from_path that takes
    `load_seconds`."""
    source = SCALED_SUM.replace("OFFSET", repr(float(offset))).replace(
        "LOAD_SECONDS", repr(float(load_seconds))
    )
    return build_source_package(root, "scale_predictor", "predictor", source, dist)


def scaled_sum_model(directory: Path, scale: float = 2) -> Path:
    """A model directory for `SCALED_SUM`: scale.txt and an input example."""
    directory.mkdir(parents=True)
    (directory / "scale.txt").write_text(str(scale))
    (directory / "input_example.json").write_text('{"instances": [[1, 2]]}')
    return directory

"""Files that are not what a flag wants (binary instead of text, a missing or directory
package) and empty names: one ``ERROR:`` line and exit 2, never a traceback or a success that
did nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlengine
from mlengine.config import Settings
from mlengine.errors import InvalidArgument
from tests.conftest import ServerProcess

Cli = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr
    return lines[0]


def test_binary_files_and_bad_packages_are_refused_in_one_line(
    run_cli: Cli, client: mlengine.Client, tmp_path: Path
) -> None:
    iris = load_iris()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target),
                model_dir / "model.joblib")  # fmt: skip
    client.models.create("m")
    client.versions.create("m", "v1", model_dir)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00bad")
    for flag in ("--json-instances", "--json-request", "--text-instances"):
        for command in (["predict", "--model", "m"], ["explain", "--model", "m"],
                        ["local", "predict", "--model-dir", str(model_dir)]):  # fmt: skip
            line = _one_error_line(run_cli(*command, flag, str(binary)))
            assert f"The {flag} file {binary} is not UTF-8 text" in line, line
    empty = tmp_path / "empty.json"
    empty.write_text("")
    for flag in ("--json-instances", "--text-instances"):
        line = _one_error_line(run_cli("predict", "--model", "m", flag, str(empty)))
        assert line == f"ERROR: The {flag} file {empty} holds no instances."
    for directory in ("", str(tmp_path / "nope")):
        line = _one_error_line(run_cli("local", "predict", "--model-dir", directory,
                                       "--json-instances", str(empty)))  # fmt: skip
        assert line == f"ERROR: The --model-dir {directory!r} is not a directory."
    create = ("versions", "create", "v2", "--model", "m", "--origin", str(model_dir))
    assert "The config file" in _one_error_line(run_cli(*create, "--config", str(binary)))
    assert "not UTF-8 text" in _one_error_line(
        run_cli("versions", "update", "v1", "--model", "m", "--config", str(binary))
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert "must hold a Version object (a mapping)" in _one_error_line(
        run_cli(*create, "--config", str(listed))
    )
    missing = tmp_path / "missing.tar.gz"
    assert _one_error_line(run_cli(*create, "--package-uris", str(missing))) == (
        f"ERROR: The package file {missing} does not exist."
    )
    directory = tmp_path / "adir.tar.gz"
    directory.mkdir()
    assert _one_error_line(run_cli(*create, "--package-uris", str(directory))) == (
        f"ERROR: The package file {directory} is a directory, not a file."
    )
    assert "does not exist" in _one_error_line(
        run_cli("versions", "update", "v1", "--model", "m", "--package-uris", str(missing))
    )
    assert [v["name"].rsplit("/", 1)[-1] for v in client.versions.list("m")] == ["v1"]


def test_empty_names_are_refused(run_cli: Cli, client: mlengine.Client, tmp_path: Path) -> None:
    client.models.create("m")
    instances = tmp_path / "instances.json"
    instances.write_text("[1, 2, 3, 4]\n")
    for args in (
        ("models", "describe", ""),
        ("models", "delete", ""),
        ("versions", "describe", "", "--model", "m"),
        ("versions", "delete", "", "--model", "m"),
        ("versions", "set-default", "", "--model", "m"),
        ("operations", "describe", ""),
        ("predict", "--model", "", "--json-instances", str(instances)),
        ("predict", "--model", "m", "--version", "", "--json-instances", str(instances)),
        ("versions", "create", "v9", "--model", "m", "--origin", str(tmp_path), "--framework", ""),
    ):
        assert "is empty" in _one_error_line(run_cli(*args)), args
    for call in (
        lambda: client.models.get(""),
        lambda: client.models.delete(""),
        lambda: client.versions.get("m", ""),
        lambda: client.versions.delete("m", ""),
        lambda: client.operations.get(""),
        lambda: client.predict("m", [[1, 2, 3, 4]], version=""),
    ):
        with pytest.raises(InvalidArgument, match="is empty"):
            call()
    with pytest.raises(InvalidArgument, match="Unknown name 'foo' in the Version"):
        client.versions.create("m", "v9", tmp_path, config={"foo": 1})  # not dropped silently
    with pytest.raises(InvalidArgument, match="Unknown name 'minNode' at 'autoScaling'"):
        client.versions.create("m", "v9", tmp_path, config={"auto_scaling": {"minNode": 1}})
    assert [m["name"] for m in client.models.list()] == ["projects/default/models/m"]
    assert list(client.versions.list("m")) == []

"""Settings: flag > MLENGINE_* env > config file > default, and `mlengine config`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlengine.config import Settings, write_config_value
from mlengine.errors import InvalidArgument


def test_lookup_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("project: from-file\nrunner: local\nmax_running_jobs: 7\n")
    env = {"MLENGINE_HOME": str(home), "MLENGINE_PROJECT": "from-env"}
    settings = Settings.load({"project": None}, environ=env)
    assert settings.project == "from-env"
    assert settings.sources["project"] == "env MLENGINE_PROJECT"
    assert settings.max_running_jobs == 7
    assert settings.sources["max_running_jobs"] == f"file {home / 'config.yaml'}"
    assert settings.database_url == f"sqlite:///{home / 'metadata.db'}"
    assert settings.sources["database_url"] == "default"
    flagged = Settings.load({"project": "from-flag"}, environ=env)
    assert (flagged.project, flagged.sources["project"]) == ("from-flag", "flag")


def test_defaults_follow_home(tmp_path: Path) -> None:
    settings = Settings.load(environ={"MLENGINE_HOME": str(tmp_path)})
    assert settings.artifact_root == str(tmp_path / "artifacts")
    assert settings.warehouse_path == str(tmp_path / "warehouse.duckdb")
    assert settings.api_url == "http://127.0.0.1:8470"
    assert settings.project == "default"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("project: [unclosed", "not valid YAML"),
        ("- a list\n", "must hold a mapping"),
        ("colour: blue\n", "unknown settings: colour"),
        ("max_running_jobs: zero\n", "'max_running_jobs'"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        Settings.load(environ={"MLENGINE_HOME": str(tmp_path)})


def test_write_config_value_is_read_back(tmp_path: Path) -> None:
    settings = Settings.load(environ={"MLENGINE_HOME": str(tmp_path)})
    write_config_value(settings, "project", "alpha")
    assert Settings.load(environ={"MLENGINE_HOME": str(tmp_path)}).project == "alpha"
    write_config_value(settings, "project", None)
    assert Settings.load(environ={"MLENGINE_HOME": str(tmp_path)}).project == "default"
    with pytest.raises(InvalidArgument, match="Unknown setting"):
        write_config_value(settings, "nope", "1")
    with pytest.raises(InvalidArgument, match="max_running_jobs"):
        write_config_value(settings, "max_running_jobs", "-1")


def test_config_cli(run_cli: Callable[..., subprocess.CompletedProcess[str]], home: Path) -> None:
    assert run_cli("config", "set", "project", "beta").returncode == 0
    result = run_cli("config", "list", "--format", "json", env={"MLENGINE_RUNNER": "local"})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["project"]["value"] == "beta"
    assert rows["project"]["source"].startswith("file ")
    assert rows["runner"]["source"] == "env MLENGINE_RUNNER"
    assert rows["home"]["value"] == str(home)
    flagged = run_cli("--project", "gamma", "config", "list", "--format", "json")
    assert {r["name"]: r for r in json.loads(flagged.stdout)}["project"]["source"] == "flag"
    bad = run_cli("config", "set", "max_running_jobs", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "max_running_jobs" in bad.stderr

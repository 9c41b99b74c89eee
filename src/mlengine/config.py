"""Settings, with one lookup order: flag > ``MLENGINE_*`` environment > config file > default.

The config file is YAML at ``$MLENGINE_CONFIG`` or ``$MLENGINE_HOME/config.yaml``; its keys are
the setting names below (``database_url: postgresql+psycopg://...``). `mlengine config list`
prints every value with the place it came from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mlengine.errors import InvalidArgument

__all__ = ["SETTINGS", "Setting", "Settings", "write_config_value"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configurable value: its name, environment variable, default and parser."""

    name: str
    env: str
    help: str
    default: Callable[[dict[str, Any]], Any]
    parse: Callable[[Any], Any] = str


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be > 0")
    return number


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "MLENGINE_HOME", "State directory", lambda _: str(Path.home() / ".mlengine")),
    Setting(
        "database_url",
        "MLENGINE_DATABASE_URL",
        "Metadata database (SQLAlchemy URL)",
        lambda v: f"sqlite:///{Path(v['home']) / 'metadata.db'}",
    ),
    Setting(
        "artifact_root",
        "MLENGINE_ARTIFACT_ROOT",
        "Artifact store (path or fsspec URL)",
        lambda v: str(Path(v["home"]) / "artifacts"),
    ),
    Setting(
        "warehouse_path",
        "MLENGINE_WAREHOUSE_PATH",
        "SQL warehouse (DuckDB file)",
        lambda v: str(Path(v["home"]) / "warehouse.duckdb"),
    ),
    Setting(
        "api_url",
        "MLENGINE_API_URL",
        "API server the CLI and SDK use, and where a local server binds",
        lambda _: "http://127.0.0.1:8470",
    ),
    Setting("project", "MLENGINE_PROJECT", "Default project", lambda _: "default"),
    Setting("api_token", "MLENGINE_API_TOKEN", "Bearer token for the API", lambda _: ""),
    Setting("runner", "MLENGINE_RUNNER", "Runner for jobs (local)", lambda _: "local"),
    Setting(
        "max_running_jobs",
        "MLENGINE_MAX_RUNNING_JOBS",
        "Jobs the scheduler runs at once",
        lambda _: 4,
        _positive_int,
    ),
    Setting(
        "loaded_versions",
        "MLENGINE_LOADED_VERSIONS",
        "Model versions kept loaded in memory (LRU)",
        lambda _: 8,
        _positive_int,
    ),
    Setting(
        "max_batch_size",
        "MLENGINE_MAX_BATCH_SIZE",
        "Instances merged into one model call (per version: label max_batch_size)",
        lambda _: 1024,
        _positive_int,
    ),
    Setting(
        "max_batch_wait_ms",
        "MLENGINE_MAX_BATCH_WAIT_MS",
        "Extra wait for a fuller batch (per version: label max_batch_wait_ms); 0 = none",
        lambda _: 0.0,
        _non_negative_float,
    ),
    Setting(
        "max_request_bytes",
        "MLENGINE_MAX_REQUEST_BYTES",
        "Largest prediction request body (AI Platform: 1.5 MB)",
        lambda _: 1_572_864,
        _positive_int,
    ),
    Setting(
        "cancel_grace_seconds",
        "MLENGINE_CANCEL_GRACE_SECONDS",
        "Seconds between SIGTERM and SIGKILL when a job is cancelled",
        lambda _: 5.0,
        _positive_float,
    ),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved settings; `sources` says where each value came from
    (``flag``, ``env MLENGINE_X``, ``file PATH`` or ``default``)."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    config_file: Path

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve every setting.

        Raises:
            InvalidArgument: a value does not parse, or the config file is not a YAML mapping.
        """
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        home = _first(flags, environ, {}, _BY_NAME["home"])
        config_file = Path(
            environ.get("MLENGINE_CONFIG")
            or Path(home[0] if home[0] is not None else _BY_NAME["home"].default({}))
            / "config.yaml"
        ).expanduser()
        file_values = _read_config_file(config_file)
        for setting in SETTINGS:
            value, source = _first(flags, environ, file_values, setting)
            if source == "file":
                source = f"file {config_file}"
            if value is None:
                value, source = setting.default(values), "default"
            try:
                values[setting.name] = setting.parse(value)
            except (TypeError, ValueError) as error:
                raise InvalidArgument(
                    f"The setting {setting.name!r} ({source}) is invalid: {error}. Got {value!r}."
                ) from None
            sources[setting.name] = source
        values["home"] = str(Path(values["home"]).expanduser())
        return cls(values=values, sources=sources, config_file=config_file)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def home_path(self) -> Path:
        """`home` as a Path (created on demand by the parts that write there)."""
        return Path(self.values["home"])

    def rows(self) -> list[dict[str, str]]:
        """One row per setting for `mlengine config list`."""
        return [
            {
                "name": s.name,
                "value": "****"
                if s.name == "api_token" and self.values[s.name]
                else str(self.values[s.name]),
                "source": self.sources[s.name],
                "env": s.env,
            }
            for s in SETTINGS
        ]


def _first(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    file_values: Mapping[str, Any],
    setting: Setting,
) -> tuple[Any, str]:
    if setting.name in flags:
        return flags[setting.name], "flag"
    if environ.get(setting.env):
        return environ[setting.env], f"env {setting.env}"
    if setting.name in file_values:
        return file_values[setting.name], "file"
    return None, "default"


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InvalidArgument(f"The config file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"The config file {path} must hold a mapping of setting names.")
    unknown = sorted(set(data) - set(_BY_NAME))
    if unknown:
        raise InvalidArgument(
            f"The config file {path} has unknown settings: {', '.join(unknown)}. "
            f"Known: {', '.join(_BY_NAME)}."
        )
    return data


def write_config_value(settings: Settings, name: str, value: str | None) -> None:
    """Set (or, with None, remove) `name` in the config file, atomically.

    Raises:
        InvalidArgument: unknown setting or a value that does not parse.
    """
    if name not in _BY_NAME:
        raise InvalidArgument(f"Unknown setting {name!r}. Known: {', '.join(_BY_NAME)}.")
    if value is not None:
        try:
            _BY_NAME[name].parse(value)
        except (TypeError, ValueError) as error:
            raise InvalidArgument(f"Invalid value for {name!r}: {error}. Got {value!r}.") from None
    data = _read_config_file(settings.config_file)
    if value is None:
        data.pop(name, None)
    else:
        data[name] = value
    settings.config_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = settings.config_file.with_suffix(".yaml.tmp")
    temporary.write_text(yaml.safe_dump(data, sort_keys=True))
    os.replace(temporary, settings.config_file)

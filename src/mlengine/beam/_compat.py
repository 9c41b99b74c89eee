"""Importing Apache Beam quietly, and keeping its DirectRunner offline.

Two things about apache-beam 2.77 that mlengine smooths over:

* With google-cloud-storage installed but not Beam's ``[gcp]`` extra, ``import apache_beam``
  logs ``apitools not found, and bigquery client libraries are not available ...`` on the root
  logger. That line says nothing a local user can act on; it is dropped.
* Beam's ``DirectRunner`` (the default runner, and what ``--runner=DirectRunner`` names) first
  tries the Prism runner, which downloads a Go binary from GitHub; offline the download fails
  and Beam falls back to its pure-Python runner. `install_offline_direct_runner` replaces
  ``DirectRunner`` by a subclass that skips Prism and goes straight to that fallback (the
  FnApiRunner, or the BundleBasedDirectRunner for streaming features it lacks). Naming
  ``PrismRunner`` explicitly is left alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from mlengine.errors import MissingDependency

__all__ = ["BEAM_INSTALL_HINT", "import_beam", "install_offline_direct_runner"]

BEAM_INSTALL_HINT = "Install it with: pip install 'mlengine[beam]'"
_APITOOLS_NOTICE = "apitools not found"


class _DropApitoolsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_APITOOLS_NOTICE)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    notice_filter = _DropApitoolsNotice()
    root.addFilter(notice_filter)
    try:
        yield
    finally:
        root.removeFilter(notice_filter)


def import_beam() -> Any:
    """``import apache_beam``, without its apitools notice.

    Raises:
        MissingDependency: apache-beam is not installed.
    """
    try:
        with _quiet_root_logger():
            import apache_beam
    except ImportError as error:
        raise MissingDependency(
            f"mlengine.beam needs Apache Beam ({error}). {BEAM_INSTALL_HINT}"
        ) from error
    return apache_beam


class _PrismDisabled:
    """Stands in for PrismRunner inside the offline DirectRunner: fails at once, so Beam takes
    its own fallback path without trying to download anything."""

    def run_pipeline(self, pipeline: Any, options: Any) -> Any:
        raise RuntimeError("Prism is skipped by mlengine (offline DirectRunner)")


def install_offline_direct_runner() -> None:
    """Make ``DirectRunner`` skip Prism (module docstring). Idempotent."""
    from apache_beam import runners
    from apache_beam.runners import direct
    from apache_beam.runners.direct import direct_runner
    from apache_beam.runners.portability import prism_runner

    original = direct_runner.DirectRunner
    if getattr(original, "mlengine_offline", False):
        return

    class DirectRunner(original):  # type: ignore[misc, valid-type]
        """Beam's DirectRunner without the Prism download: the pure-Python runners only."""

        mlengine_offline = True

        def run_pipeline(self, pipeline: Any, options: Any) -> Any:
            real = prism_runner.PrismRunner
            setattr(prism_runner, "PrismRunner", _PrismDisabled)  # noqa: B010
            try:
                return super().run_pipeline(pipeline, options)
            finally:
                setattr(prism_runner, "PrismRunner", real)  # noqa: B010

    for module in (direct_runner, direct, runners):
        if getattr(module, "DirectRunner", None) is original:
            setattr(module, "DirectRunner", DirectRunner)  # noqa: B010

"""The metrics of a server with several worker processes (``server run --workers N``), merged
when Prometheus scrapes.

uvicorn's workers share one listening socket, so each scrape of ``/metrics`` reaches one of
them; alone, that worker's counters would jump up and down from one scrape to the next. With a
directory shared by the workers, each one writes its own samples there (one JSON file per
process, replaced atomically) every `PUBLISH_INTERVAL_S`, when it answers a scrape and when it
stops; the worker that answers a scrape merges every file:

- counters and histograms are summed over all the processes, those that exited included, so a
  series never goes back when a worker is replaced;
- gauges are summed over the live processes only (versions loaded, memory, open files), except
  ``process_start_time_seconds`` (the earliest) and ``process_max_fds`` (the lowest).

The other workers' samples are at most `PUBLISH_INTERVAL_S` old. The counters themselves stay
plain integers on each worker's event loop, as with one process (see `_metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from mlengine._processes import process_running

__all__ = [
    "PUBLISH_INTERVAL_S",
    "SERVER_PID_ENV",
    "WORKER_METRICS_DIR_ENV",
    "WorkerMetrics",
    "worker_metrics_directory",
]

logger = logging.getLogger("mlengine.server.metrics")

WORKER_METRICS_DIR_ENV = "MLENGINE_WORKER_METRICS_DIR"
"""The directory the workers of one ``server run --workers N`` share their samples in, set by
that command for its workers (not a setting: each run gets a fresh one)."""

SERVER_PID_ENV = "MLENGINE_SERVER_PID"
"""The pid of the ``server run`` process, set by it for its workers: with several workers,
the process to signal to stop the server (a worker that is stopped alone is replaced)."""

PUBLISH_INTERVAL_S = 1.0
"""How often each worker writes its samples."""

_LOWEST = frozenset({"process_start_time_seconds", "process_max_fds"})
"""Gauges merged as the lowest value over the processes instead of the sum."""

_FILE_SUFFIX = ".json"
_RUN_PREFIX = "worker-metrics-"


@contextlib.contextmanager
def worker_metrics_directory(home: Path, workers: int) -> Iterator[Path | None]:
    """For the length of a server run with `workers` processes started from this one: a fresh
    directory under `home` for their metrics, named in `WORKER_METRICS_DIR_ENV` (which the
    workers inherit), removed afterwards; None with one worker (nothing to share). Directories
    left by runs whose process was killed are removed first."""
    os.environ.pop(WORKER_METRICS_DIR_ENV, None)
    parent = home / "run"
    for stale in parent.glob(f"{_RUN_PREFIX}*"):
        with contextlib.suppress(ValueError):
            if not process_running(int(stale.name.removeprefix(_RUN_PREFIX))):
                shutil.rmtree(stale, ignore_errors=True)
    if workers <= 1:
        yield None
        return
    directory = parent / f"{_RUN_PREFIX}{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[WORKER_METRICS_DIR_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(WORKER_METRICS_DIR_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


class WorkerMetrics:
    """This process's share of a multi-process server's metrics, in `directory`.

    Args:
        directory: shared by every worker of the server (created if missing).
        registry: this process's own metrics.
        pid: the process the samples belong to (this one by default).
    """

    def __init__(self, directory: Path, registry: CollectorRegistry, pid: int | None = None):
        self.directory = directory
        self.registry = registry
        self.pid = os.getpid() if pid is None else pid
        self._last: bytes | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """This process's file."""
        return self.directory / f"{self.pid}{_FILE_SUFFIX}"

    def publish(self) -> None:
        """Write this process's samples (atomically: readers see the old file or the new)."""
        families = [
            {
                "name": family.name,
                "documentation": family.documentation,
                "type": family.type,
                "unit": family.unit,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
            for family in self.registry.collect()
        ]
        data = orjson.dumps(families)
        if data == self._last:
            return
        descriptor, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=f".{self.pid}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._last = data

    def merged(self) -> MergedRegistry:
        """Every process's samples merged, this one's fresh: what a scrape answers. This
        process's file is written first, so that what the scrape reports of it is never more
        than what a later scrape, answered by another worker, reads from its file."""
        self.publish()
        return MergedRegistry(_read_all(self.directory))

    async def publish_periodically(self) -> None:
        """`publish` every `PUBLISH_INTERVAL_S` until cancelled (a failed write is logged and
        tried again next time)."""
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            try:
                self.publish()
            except OSError as error:
                logger.warning("could not write this worker's metrics: %s", error)


class MergedRegistry:
    """What `prometheus_client`'s encoders take (an object with ``collect``): the families of
    several processes merged as the module says."""

    def __init__(self, processes: dict[int, list[dict[str, Any]]]) -> None:
        self.processes = processes

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for pid, process in sorted(self.processes.items()):
            alive = process_running(pid)
            for family in process:
                name = family["name"]
                kind = family["type"]
                if kind == "gauge" and not alive:
                    continue
                if name not in families:
                    families[name] = Metric(name, family["documentation"], kind, family["unit"])
                    values[name] = {}
                merged = values[name]
                for sample_name, labels, value in family["samples"]:
                    key = (sample_name, tuple(sorted(labels.items())))
                    if key not in merged:
                        merged[key] = value
                    elif name in _LOWEST:
                        merged[key] = min(merged[key], value)
                    else:
                        merged[key] += value
        for name, metric in families.items():
            for (sample_name, labels), value in values[name].items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric


def _read_all(directory: Path) -> dict[int, list[dict[str, Any]]]:
    """Every process's published families, by pid (unreadable files skipped)."""
    processes: dict[int, list[dict[str, Any]]] = {}
    for path in directory.glob(f"*{_FILE_SUFFIX}"):
        try:
            pid = int(path.stem)
            processes[pid] = orjson.loads(path.read_bytes())
        except (ValueError, OSError, orjson.JSONDecodeError):
            continue  # not a worker's file, or removed meanwhile
    return processes


def server_pid() -> int:
    """The pid of the server this process serves for: the ``server run`` process that started
    it as a worker, or this process."""
    given = os.environ.get(SERVER_PID_ENV, "")
    return int(given) if given.isdigit() else os.getpid()

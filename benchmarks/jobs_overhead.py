"""Overhead of running a no-op trainer through mlengine, against running it directly.

What is measured, all in one run, on the same no-op trainer package (``trainer/task.py`` parses
``--job-dir``, prints one line and exits 0), each ``--repeat`` times, interleaved:

* ``direct``: ``python -m trainer.task --job-dir OUT`` with the package's parent as the working
  directory. This is the baseline.
* ``local train``: the whole ``python -m mlengine local train --module-name trainer.task
  --package-path DIR --job-dir OUT`` invocation.
* ``queued (CLI)``: the whole ``python -m mlengine jobs submit training JOB ... --stream-logs``
  invocation, which builds the sdist, uploads it, creates the job and returns when the job has
  ended: what a user waits for.
* ``queued (SDK)``: in this process, from calling ``client.jobs.submit_training`` to
  ``job.wait(poll_interval=0.02)`` returning with the job SUCCEEDED; also split into the
  ``submit_training`` call alone (sdist build + upload + create) and the server's own view,
  ``createTime`` to ``endTime``.
* ``queued, prebuilt sdist``: the same, but the job gets one sdist built once before the loop
  (``packages=[...]``, as ``--packages`` does), so every job uploads identical bytes. This is
  the env-cache-hit path whatever ``--package-path`` builds do to the archive's bytes.

For the SDK flows, each job's service log (``jobs stream-logs`` shows the same) gives a
timeline: scheduler pick-up, environment (cache hit or pip build), trainer start, trainer
output, ``endTime``; its medians are printed, so a miss says where the time went.

One server is started for the run (``mlengine server start``, not timed) with a temporary
``MLENGINE_HOME`` on a free 127.0.0.1 port, and stopped at the end. The first queued job builds
the job's cached Python environment; it runs first, as a warm-up, and is reported on its own as
"first job (cold env cache)". The repeated jobs have distinct ids and the same package content,
so they should find that environment cached; whether they did is read from each job's service
log and printed.

Targets (informational; the exit code is 0 whether they are met or not, 1 on an error):
``local train`` <= 1.3x ``direct``, and a queued job's overhead (queued - direct) <= 1.5 s.

Usage: ``python benchmarks/jobs_overhead.py [--repeat N] [--json] [--keep]
[--trainer-seconds S]``; ``--trainer-seconds`` makes the trainer sleep S seconds in every
flow, to see the same overheads against a trainer that does some work.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _main import fail, print_results, scratch_directory
from _main import progress as _progress

LOCAL_TRAIN_RATIO_TARGET = 1.3
QUEUED_OVERHEAD_TARGET_S = 1.5

TRAINER_TIMEOUT_S = 60.0
"""Limit for one direct run or one ``local train``."""
JOB_TIMEOUT_S = 180.0
"""Limit for one queued job with a cached environment."""
COLD_JOB_TIMEOUT_S = 600.0
"""Limit for the first queued job (it builds the environment with pip)."""
SERVER_TIMEOUT_S = 90.0

TRAINER_TASK = '''\
"""A no-op trainer: parse the arguments AI Platform passes, say so, exit 0.

``--sleep S`` (the benchmark's ``--trainer-seconds``) makes it wait S seconds first.
"""

import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--job-dir", default=None)
parser.add_argument("--sleep", type=float, default=0.0)
arguments, _ = parser.parse_known_args()
if arguments.sleep > 0:
    time.sleep(arguments.sleep)
print(f"noop trainer done (job dir {arguments.job_dir})", flush=True)
'''

# Service-log lines (prefixes) that mark the steps of a queued job, in order.
_MILESTONES: tuple[tuple[str, str], ...] = (
    ("validating", "Validating job requirements"),
    ("installing", "Installing the trainer packages"),
    ("env cache hit", "Using the cached Python environment"),
    ("env cache hit (other job)", "Using the Python environment"),
    ("env build started", "Creating a Python environment"),
    ("env build done", "Created the Python environment"),
    ("job running", "Job is running"),
    ("job completed", "Job completed successfully"),
)
_PRIMARY_TASK = "master-replica-0"


class BenchmarkError(Exception):
    """Something the benchmark needs failed; the message says what and shows its output."""


@dataclass
class Series:
    """Wall times (seconds) of one kind of run."""

    label: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def minimum(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.minimum, "samples_s": self.samples}


@dataclass
class QueuedJob:
    """What one queued job took, from the client's and the server's clocks (epoch seconds)."""

    job_id: str
    submitted: float
    finished: float
    resource: dict[str, Any]
    service: list[tuple[float, str, str]]  # (epoch, task name, message)

    @property
    def create_time(self) -> float:
        return _epoch(self.resource["createTime"])

    @property
    def start_time(self) -> float:
        return _epoch(self.resource["startTime"])

    @property
    def end_time(self) -> float:
        return _epoch(self.resource["endTime"])

    @property
    def env_cache(self) -> str:
        messages = [m for _, task, m in self.service if task == "service"]
        if any(m.startswith("Creating a Python environment") for m in messages):
            return "miss"
        if any(m.startswith("Using the") for m in messages):
            return "hit"
        return "unknown"

    def milestones(self) -> dict[str, float]:
        """Seconds after ``createTime`` of each step (see `_MILESTONES`)."""
        create = self.create_time
        marks = {"started (PREPARING)": self.start_time - create}
        for time_, task, message in self.service:
            if task == "service":
                for name, prefix in _MILESTONES:
                    if message.startswith(prefix) and name not in marks:
                        marks[name] = time_ - create
            elif task == _PRIMARY_TASK and "trainer output" not in marks:
                marks["trainer output"] = time_ - create
        marks["endTime"] = self.end_time - create
        return marks


def _epoch(rfc3339: str) -> float:
    moment = datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.replace(tzinfo=datetime.UTC).timestamp()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float, what: str
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `command` to completion; return its wall time and result.

    Raises:
        BenchmarkError: it timed out or exited non-zero.
    """
    start = time.perf_counter()
    try:
        result = subprocess.run(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"{what} took longer than {timeout:.0f} s: {command}") from error
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        output = _tail(result.stderr) or _tail(result.stdout)
        raise BenchmarkError(
            f"{what} failed (exit status {result.returncode}): {command}\n{output}"
        )
    return elapsed, result


def _write_trainer(root: Path) -> Path:
    package = root / "src" / "trainer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(TRAINER_TASK)
    return package


class Bench:
    """One benchmark run: a temporary home, a trainer package, a server, the measurements."""

    def __init__(self, root: Path, trainer_seconds: float = 0.0) -> None:
        self.root = root
        self.trainer_seconds = trainer_seconds
        self.trainer_args = ["--sleep", repr(trainer_seconds)] if trainer_seconds > 0 else []
        self.home = root / "home"
        self.out = root / "out"
        self.package = _write_trainer(root)
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLENGINE_")}
        env.update(MLENGINE_HOME=str(self.home), MLENGINE_API_URL=self.api_url)
        self.env = env
        self.cli = [sys.executable, "-m", "mlengine"]
        self.client: Any = None
        self.prebuilt: Path | None = None
        self._jobs = 0

    # -- server -------------------------------------------------------------------------
    def start_server(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            _run(
                [*self.cli, "server", "start"],
                env=self.env,
                cwd=self.root,
                timeout=SERVER_TIMEOUT_S,
                what="mlengine server start",
            )
        except BenchmarkError as error:
            raise BenchmarkError(
                f"{error}\n--- {self.server_log} ---\n{self._server_log()}"
            ) from None
        from mlengine import Client
        from mlengine.config import Settings

        settings = Settings.load(environ=self.env)
        self.client = Client(settings=settings, autostart=False)

    @property
    def server_log(self) -> Path:
        return self.home / "server.log"

    def _server_log(self) -> str:
        try:
            return _tail(self.server_log.read_text(errors="replace"), 60)
        except OSError as error:
            return f"(cannot read it: {error})"

    def stop_server(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        try:
            _run(
                [*self.cli, "server", "stop"],
                env=self.env,
                cwd=self.root,
                timeout=SERVER_TIMEOUT_S,
                what="mlengine server stop",
            )
        except BenchmarkError as error:
            _progress(f"WARNING: {error}")
            self._kill_server()

    def _kill_server(self) -> None:
        """Kill the server this run started, by the pid in its state file."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads((self.home / "server.json").read_text())["pid"])
            os.kill(pid, signal.SIGKILL)
            _progress(f"Killed the server (pid {pid}).")

    # -- measurements -------------------------------------------------------------------
    def _job_dir(self, name: str) -> str:
        return str(self.out / name)

    def direct(self) -> float:
        name = f"direct_{self._next()}"
        command = [
            sys.executable, "-m", "trainer.task", *self.trainer_args,
            "--job-dir", self._job_dir(name),
        ]  # fmt: skip
        elapsed, _ = _run(
            command,
            env=self.env,
            cwd=self.package.parent,
            timeout=TRAINER_TIMEOUT_S,
            what="the trainer run directly",
        )
        return elapsed

    def local_train(self) -> float:
        name = f"local_{self._next()}"
        command = [
            *self.cli, "local", "train",
            "--module-name", "trainer.task",
            "--package-path", str(self.package),
            "--job-dir", self._job_dir(name),
            "--", *self.trainer_args,
        ]  # fmt: skip
        elapsed, _ = _run(
            command, env=self.env, cwd=self.root, timeout=TRAINER_TIMEOUT_S, what="local train"
        )
        return elapsed

    def queued_cli(self) -> tuple[float, QueuedJob]:
        job_id = f"cli_{self._next()}"
        command = [
            *self.cli, "jobs", "submit", "training", job_id,
            "--module-name", "trainer.task",
            "--package-path", str(self.package),
            "--job-dir", self._job_dir(job_id),
            "--stream-logs",
            "--", *self.trainer_args,
        ]  # fmt: skip
        submitted = time.time()
        elapsed, _ = _run(
            command,
            env=self.env,
            cwd=self.root,
            timeout=JOB_TIMEOUT_S,
            what="jobs submit training --stream-logs",
        )
        job = self.client.jobs.get(job_id)
        return elapsed, self._record(job, submitted, submitted + elapsed)

    def prebuild(self) -> Path:
        """Build the trainer's sdist once, for the jobs that submit it with ``packages=``."""
        from mlengine.jobs._packaging import build_package

        self.prebuilt = build_package(self.package, self.root / "dist")
        return self.prebuilt

    def queued_sdk(
        self, *, prebuilt: bool = False, timeout: float = JOB_TIMEOUT_S
    ) -> tuple[float, float, QueuedJob]:
        """(submit -> SUCCEEDED, the submit_training call alone, the job).

        With `prebuilt`, the job gets the sdist built by `prebuild` (``packages=[...]``, as
        ``--packages`` does) instead of ``package_path``: every such job uploads the same bytes.
        """
        job_id = f"{'pre' if prebuilt else 'sdk'}_{self._next()}"
        source: dict[str, Any] = (
            {"packages": [self.prebuilt]} if prebuilt else {"package_path": self.package}
        )
        submitted = time.time()
        start = time.perf_counter()
        job = self.client.jobs.submit_training(
            job_id,
            module_name="trainer.task",
            job_dir=self._job_dir(job_id),
            args=self.trainer_args,
            **source,
        )
        queued = time.perf_counter() - start
        try:
            job.wait(timeout=timeout, poll_interval=0.02)
        except TimeoutError as error:
            raise BenchmarkError(f"{error}\n{self._job_logs(job)}") from None
        elapsed = time.perf_counter() - start
        return elapsed, queued, self._record(job, submitted, submitted + elapsed)

    def _record(self, job: Any, submitted: float, finished: float) -> QueuedJob:
        resource = job.refresh()
        entries = [(_epoch(e["timestamp"]), e["taskName"], e["message"]) for e in job.logs()]
        if resource.get("state") != "SUCCEEDED":
            raise BenchmarkError(
                f"Job {job.job_id} ended {resource.get('state')}: "
                f"{resource.get('errorMessage', '')}\n{self._job_logs(job)}"
            )
        return QueuedJob(job.job_id, submitted, finished, resource, entries)

    def _job_logs(self, job: Any) -> str:
        try:
            lines = [f"{e['taskName']}: {e['message']}" for e in job.logs()]
        except Exception as error:  # only for an error message
            return f"(cannot read the job's logs: {error})"
        return _tail("\n".join(lines), 40)

    def _next(self) -> int:
        self._jobs += 1
        return self._jobs


_SERIES = (
    ("direct", "direct: python -m trainer.task"),
    ("local_train", "mlengine local train"),
    ("queued_cli", "queued: jobs submit --stream-logs (CLI)"),
    ("queued_sdk", "queued: submit_training -> SUCCEEDED (SDK)"),
    ("sdk_submit_call", "  of which the submit_training call (sdist+upload+create)"),
    ("sdk_server", "  of which server createTime -> endTime"),
    ("queued_sdk_prebuilt", "queued, prebuilt sdist (packages=[...]) (SDK)"),
    ("prebuilt_submit_call", "  of which the submit_training call (upload+create)"),
    ("prebuilt_server", "  of which server createTime -> endTime"),
)
_QUEUED = ("queued_cli", "queued_sdk", "queued_sdk_prebuilt")


def measure(bench: Bench, repeat: int) -> dict[str, Any]:
    """Run every measurement; return the results as plain data."""
    series = {key: Series(label) for key, label in _SERIES}
    jobs: dict[str, list[QueuedJob]] = {key: [] for key in _QUEUED}
    _progress("warm-up: direct, local train (not timed)")
    bench.direct()
    bench.local_train()
    _progress("first queued job (cold env cache, SDK, package_path)...")
    cold_elapsed, cold_submit, cold = bench.queued_sdk(timeout=COLD_JOB_TIMEOUT_S)
    _progress(f"  {cold_elapsed:.2f} s (env cache: {cold.env_cache})")
    _progress("warm-up: building the sdist once, one job with it (not timed)")
    bench.prebuild()
    bench.queued_sdk(prebuilt=True, timeout=COLD_JOB_TIMEOUT_S)

    def run_direct() -> None:
        series["direct"].samples.append(bench.direct())

    def run_local() -> None:
        series["local_train"].samples.append(bench.local_train())

    def run_cli() -> None:
        elapsed, job = bench.queued_cli()
        series["queued_cli"].samples.append(elapsed)
        jobs["queued_cli"].append(job)

    def run_sdk(prebuilt: bool) -> None:
        elapsed, submit_call, job = bench.queued_sdk(prebuilt=prebuilt)
        key, prefix = ("queued_sdk_prebuilt", "prebuilt") if prebuilt else ("queued_sdk", "sdk")
        series[key].samples.append(elapsed)
        series[f"{prefix}_submit_call"].samples.append(submit_call)
        series[f"{prefix}_server"].samples.append(job.end_time - job.create_time)
        jobs[key].append(job)

    steps: list[Callable[[], None]] = [
        run_direct,
        run_local,
        run_cli,
        lambda: run_sdk(False),
        lambda: run_sdk(True),
    ]
    for index in range(repeat):
        start = time.perf_counter()
        for step in steps:
            step()
        _progress(f"repetition {index + 1}/{repeat}: {time.perf_counter() - start:.1f} s")

    direct = series["direct"]
    local = series["local_train"]
    results: dict[str, Any] = {
        "repeat": repeat,
        "trainer_seconds": bench.trainer_seconds,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "series": {key: {"label": s.label, **s.to_json()} for key, s in series.items()},
        "first_job": {
            "queued_sdk_s": cold_elapsed,
            "sdk_submit_call_s": cold_submit,
            "server_create_to_end_s": cold.end_time - cold.create_time,
            "env_cache": cold.env_cache,
            "milestones_s": cold.milestones(),
        },
        "local_train_ratio": {
            "median": local.median / direct.median,
            "min": local.minimum / direct.minimum,
            "target": LOCAL_TRAIN_RATIO_TARGET,
        },
        "queued_overhead_s": {
            key: {
                "median": series[key].median - direct.median,
                "min": series[key].minimum - direct.minimum,
                "target": QUEUED_OVERHEAD_TARGET_S,
            }
            for key in _QUEUED
        },
        "env_cache": {
            key: {
                "hits": sum(1 for job in flow if job.env_cache == "hit"),
                "misses": sum(1 for job in flow if job.env_cache == "miss"),
                "jobs": len(flow),
            }
            for key, flow in jobs.items()
        },
        "timelines": {key: _timeline(jobs[key]) for key in ("queued_sdk", "queued_sdk_prebuilt")},
    }
    overheads = results["queued_overhead_s"]
    results["verdicts"] = {
        "local_train_ratio": _verdict(
            results["local_train_ratio"]["median"] <= LOCAL_TRAIN_RATIO_TARGET
        ),
        **{
            f"overhead_{key}": _verdict(overheads[key]["median"] <= QUEUED_OVERHEAD_TARGET_S)
            for key in _QUEUED
        },
    }
    return results


def _median(values: Any) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def _timeline(jobs: Sequence[QueuedJob]) -> dict[str, float]:
    """Median seconds after ``createTime`` of each step of `jobs`, client-side ones included."""
    marks = []
    for job in jobs:
        mark = job.milestones()
        mark["submit_training called (client)"] = job.submitted - job.create_time
        mark["wait() returned (client)"] = job.finished - job.create_time
        marks.append(mark)
    names: list[str] = []
    for mark in marks:
        names.extend(name for name in mark if name not in names)
    medians = {name: _median(m[name] for m in marks if name in m) for name in names}
    return dict(sorted(medians.items(), key=lambda item: item[1]))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


_FLOW_NAMES = {
    "queued_cli": "queued (CLI)",
    "queued_sdk": "queued (SDK)",
    "queued_sdk_prebuilt": "queued (SDK, prebuilt sdist)",
}


def report(results: Mapping[str, Any]) -> str:
    """The results as a human-readable table."""
    width = 60
    seconds = results["trainer_seconds"]
    trainer = f"trainer sleeping {seconds} s" if seconds else "no-op trainer"
    lines = [
        f"mlengine jobs overhead: {trainer}, {results['repeat']} repetitions, "
        f"Python {results['python']}, {results['cpus']} CPUs, {results['platform']}",
        "",
        f"{'wall time':<{width}}{'median s':>10}{'min s':>10}",
    ]
    for entry in results["series"].values():
        lines.append(f"{entry['label']:<{width}}{entry['median_s']:>10.3f}{entry['min_s']:>10.3f}")
    cold = results["first_job"]
    lines += [
        f"{'first job (cold env cache), SDK submit -> SUCCEEDED':<{width}}"
        f"{cold['queued_sdk_s']:>10.3f}",
        f"{'  of which server createTime -> endTime':<{width}}"
        f"{cold['server_create_to_end_s']:>10.3f}",
        "",
    ]
    ratio = results["local_train_ratio"]
    lines.append(
        f"local train / direct: {ratio['median']:.2f}x median, {ratio['min']:.2f}x min "
        f"(target <= {ratio['target']}x)"
    )
    for key, overhead in results["queued_overhead_s"].items():
        lines.append(
            f"{_FLOW_NAMES[key]} - direct: {overhead['median']:.3f} s median, "
            f"{overhead['min']:.3f} s min (target <= {overhead['target']} s)"
        )
    lines += ["", "env cache of the repeated queued jobs (expected: all hits):"]
    for key, cache in results["env_cache"].items():
        lines.append(
            f"  {_FLOW_NAMES[key]:<30}{cache['hits']} hits, {cache['misses']} misses "
            f"of {cache['jobs']}"
        )
    for key, timeline in results["timelines"].items():
        lines += ["", f"{_FLOW_NAMES[key]} timeline, median s after createTime (one clock):"]
        lines += [f"  {name:<36}{offset:>8.3f}" for name, offset in timeline.items()]
    lines.append("")
    for key, verdict in results["verdicts"].items():
        if key == "local_train_ratio":
            lines.append(f"{verdict}  local train <= {LOCAL_TRAIN_RATIO_TARGET}x direct")
        else:
            flow = _FLOW_NAMES[key.removeprefix("overhead_")]
            lines.append(f"{verdict}  {flow} overhead <= {QUEUED_OVERHEAD_TARGET_S} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (home, logs, jobs)"
    )
    parser.add_argument(
        "--trainer-seconds",
        type=float,
        default=0.0,
        help="the trainer sleeps this long (default 0: a no-op)",
    )
    options = parser.parse_args(argv)
    if options.repeat < 1:
        parser.error("--repeat must be >= 1")
    if options.trainer_seconds < 0:
        parser.error("--trainer-seconds must be >= 0")
    from mlengine.errors import MLEngineError

    with scratch_directory("mlengine-bench-", options.keep) as root:
        bench = Bench(root, options.trainer_seconds)
        try:
            _progress(f"starting a server at {bench.api_url} (home {bench.home})")
            try:
                bench.start_server()
                results = measure(bench, options.repeat)
            finally:
                bench.stop_server()
        except (BenchmarkError, MLEngineError) as error:
            return fail(error)
    print_results(results, options.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``mlengine preprocess pipeline.py``: run a user's Beam pipeline file, as ``python
pipeline.py --runner RUNNER ARGS`` would, with the runner checked before anything starts.

* The file runs in this process as ``__main__`` (``runpy``), with ``sys.argv`` set to
  ``[pipeline.py, --runner=RUNNER, *ARGS]`` (plus the worker options below), its folder
  first on ``sys.path`` and on ``PYTHONPATH`` (for worker processes). So pipelines that parse
  their own flags (``argparse.parse_known_args``) and hand the rest to ``PipelineOptions``, and
  pipelines that call ``PipelineOptions()`` with no arguments (Beam then reads ``sys.argv``),
  both see the runner. A ``--runner`` among ARGS is used when none is given to mlengine.
* ``DirectRunner`` (the default) runs offline on Beam's pure-Python FnApiRunner: Beam's own
  DirectRunner would first try to download the Prism binary (`_compat`). By default it runs in
  this one process; ``workers=N`` (``mlengine preprocess --workers N``) runs N worker processes
  (``--direct_running_mode=multi_processing --direct_num_workers=N``). Each worker costs ~3 s
  of start-up (importing Beam), so one process is faster on the 550k-row Black Friday job and
  two are faster from ~2M rows on (docs/beam.md has the measurements).
* ``DataflowRunner``, ``FlinkRunner`` and ``SparkRunner`` get ARGS unchanged. They cannot run
  offline, so what each needs is checked first and a missing piece is one clear error
  (`check_runner_args`): Dataflow needs a GCP project, region and ``gs://`` temp location and
  ``apache-beam[gcp]``; Flink and Spark need a Beam job server (``--job_endpoint``) or a local
  job-server jar, because otherwise Beam downloads the jar from Maven Central.
* Exit codes: 0 when the file ran to its end; 2 when the file cannot be read or compiled, or
  the runner's options are incomplete; 1 when the pipeline raised while it ran (one line:
  the exception's type and message; the warehouse is unchanged, since `WriteToWarehouse` only
  commits at the end); ``sys.exit(n)`` in the file gives n.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import runpy
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlengine.errors import InvalidArgument, MissingDependency, OperationFailed, invalid_field

__all__ = [
    "LOG_LEVELS",
    "RUNNERS",
    "check_runner_args",
    "pipeline_argv",
    "run_pipeline",
]

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical", "none")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed)\b.*$")


def _runner_name(value: str) -> str:
    """Beam's spelling of a runner name: ``dataflow``, ``DataflowRunner`` -> ``DataflowRunner``."""
    wanted = value.strip().lower()
    for runner in RUNNERS:
        if wanted in (runner.lower(), runner.lower().removesuffix("runner")):
            return runner
    raise invalid_field("--runner", "mlengine preprocess", "one of " + ", ".join(RUNNERS), value)


def _flag(args: Sequence[str], name: str) -> str | None:
    """The last value of ``--name=value`` / ``--name value`` among `args`, as argparse reads."""
    value = None
    for index, arg in enumerate(args):
        if arg == f"--{name}":
            value = args[index + 1] if index + 1 < len(args) else ""
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _has_flag(args: Sequence[str], name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in args)


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _job_server_problem(runner: str, args: Sequence[str], engine: str) -> str | None:
    if _flag(args, "job_endpoint"):
        return None
    jar = _flag(args, f"{engine}_job_server_jar")
    if jar:
        if "://" not in jar and not Path(jar).is_file():
            return f"The {runner}'s --{engine}_job_server_jar {jar} is not a file."
        return None
    master = "--flink_master=HOST:PORT" if engine == "flink" else "--spark_master_url=URL"
    return (
        f"The {runner} needs a Beam job server: pass --job_endpoint=HOST:PORT (a running "
        f"{engine.title()} job server), or --{engine}_job_server_jar=PATH (a local jar; needs "
        f"Java) with {master}. Without either, Beam downloads the job-server jar, which "
        "cannot work offline."
    )


def check_runner_args(runner: str, args: Sequence[str]) -> None:
    """Check, before anything starts, that `args` give `runner` what it needs.

    * DirectRunner: nothing (it runs here, offline).
    * DataflowRunner: ``--project``, ``--region`` and ``--temp_location=gs://...`` (or
      ``--staging_location``), and the ``apache-beam[gcp]`` extra installed.
    * FlinkRunner / SparkRunner: ``--job_endpoint`` or a local ``--flink_job_server_jar`` /
      ``--spark_job_server_jar``.

    Raises:
        InvalidArgument: an unknown runner or a missing option.
        MissingDependency: Dataflow without ``apache-beam[gcp]``.
    """
    runner = _runner_name(runner)
    if runner == "DataflowRunner":
        missing = [f"--{name}" for name in ("project", "region") if not _flag(args, name)]
        location = _flag(args, "temp_location") or _flag(args, "staging_location") or ""
        if not location:
            missing.append("--temp_location=gs://BUCKET/PATH")
        if missing:
            raise InvalidArgument(
                "The DataflowRunner runs on Google Cloud and needs --project, --region and "
                f"--temp_location=gs://BUCKET/PATH after --; missing: {', '.join(missing)}."
            )
        if not location.startswith("gs://"):
            raise InvalidArgument(
                f"The DataflowRunner's --temp_location must be a gs:// path. Got {location!r}."
            )
        if not _module_available("google.cloud.dataflow"):
            raise MissingDependency(
                "The DataflowRunner needs Apache Beam's GCP extra. "
                "Install it with: pip install 'apache-beam[gcp]'"
            )
    elif runner in ("FlinkRunner", "SparkRunner"):
        problem = _job_server_problem(runner, args, runner.removesuffix("Runner").lower())
        if problem:
            raise InvalidArgument(problem)


def _worker_options(workers: int, log_level: str, args: Sequence[str]) -> list[str]:
    harness_level = "CRITICAL" if log_level == "none" else log_level.upper()
    options = {
        "direct_running_mode": "multi_processing",
        "direct_num_workers": str(workers),
        "default_sdk_harness_log_level": harness_level,
    }
    return [f"--{name}={value}" for name, value in options.items() if not _has_flag(args, name)]


def pipeline_argv(
    path: str | Path,
    args: Sequence[str],
    runner: str | None = None,
    *,
    workers: int = 1,
    log_level: str = "none",
) -> list[str]:
    """The ``sys.argv`` the pipeline file sees (module docstring), after `check_runner_args`.

    Args:
        path: the pipeline file (``argv[0]``).
        args: the arguments for the pipeline, passed on unchanged.
        runner: DirectRunner (default), DataflowRunner, FlinkRunner or SparkRunner.
        workers: DirectRunner worker processes; 1 runs the pipeline in this process.
        log_level: with workers > 1, the workers' log level (see `run_pipeline`).

    Raises:
        InvalidArgument, MissingDependency: as `check_runner_args`; also a ``--runner`` in
            `args` that differs from `runner`, and `workers` with another runner than Direct.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise invalid_field("--workers", "mlengine preprocess", "an integer >= 1", workers)
    args = [str(arg) for arg in args]
    given = _flag(args, "runner")
    if given is not None:
        given_name = _runner_name(given)
        if runner is not None and _runner_name(runner) != given_name:
            raise InvalidArgument(
                f"Two runners given: --runner {runner} to mlengine and --runner {given} "
                "after --; pass one."
            )
        runner = given_name
    runner = _runner_name(runner or "DirectRunner")
    check_runner_args(runner, args)
    argv = [str(path)]
    if given is None:
        argv.append(f"--runner={runner}")
    if workers > 1:
        if runner != "DirectRunner":
            raise InvalidArgument(
                f"--workers is for the DirectRunner; the {runner} sizes its own workers "
                "(Dataflow: --num_workers after --)."
            )
        argv.extend(_worker_options(workers, log_level, args))
    return argv + args


def _compile(path: Path) -> None:
    """Read and compile the file so that a bad file is a usage error (exit 2), not a failure."""
    if not path.exists():
        raise InvalidArgument(f"The pipeline file {path} does not exist.")
    if not path.is_file():
        raise InvalidArgument(f"The pipeline file {path} is not a file.")
    try:
        source = path.read_bytes()
    except OSError as error:
        raise InvalidArgument(f"Cannot read the pipeline file {path}: {error.strerror}.") from error
    try:
        compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as error:
        raise InvalidArgument(
            f"The pipeline file {path} does not compile: {error.msg} (line {error.lineno})."
        ) from error
    except ValueError as error:  # e.g. null bytes
        raise InvalidArgument(f"The pipeline file {path} does not compile: {error}.") from error


@contextlib.contextmanager
def _as_main(path: Path, argv: list[str]) -> Iterator[None]:
    """``sys.argv``, ``sys.path`` and ``PYTHONPATH`` as ``python path ARGS`` would have them."""
    folder = str(path.resolve().parent)
    saved_argv, saved_path = sys.argv, list(sys.path)
    saved_pythonpath = os.environ.get("PYTHONPATH")
    sys.argv = list(argv)
    sys.path.insert(0, folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, saved_pythonpath]))
    try:
        yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        if saved_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pythonpath


@contextlib.contextmanager
def _beam_log_level(level: str) -> Iterator[None]:
    logger = logging.getLogger("apache_beam")
    saved = logger.level
    logger.setLevel(logging.CRITICAL + 10 if level == "none" else level.upper())
    try:
        yield
    finally:
        logger.setLevel(saved)


def _summary(error: BaseException) -> str:
    """One line: the exception's type and message. Beam's multi-process runner carries a
    worker's whole traceback in its message; the original exception is its last line."""
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line):
                return line
    first = lines[0] if lines else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_pipeline(
    path: str | Path,
    args: Sequence[str] = (),
    runner: str | None = None,
    *,
    workers: int = 1,
    log_level: str = "none",
) -> int:
    """Run a Beam pipeline file as ``python path --runner RUNNER ARGS`` (module docstring).

    Args:
        path: the pipeline file.
        args: the pipeline's arguments, passed on unchanged.
        runner: DirectRunner (default: offline, pure Python), DataflowRunner, FlinkRunner or
            SparkRunner.
        workers: DirectRunner worker processes (1: this process, the fastest below ~2M rows).
        log_level: how much of Beam's own logging to show: debug, info, warning, error,
            critical or none (the default: a failure is reported once, in one line). At debug
            and info a failure's traceback is printed too.

    Returns:
        The exit code: 0, or the code the file passed to ``sys.exit``.

    Raises:
        InvalidArgument: the file cannot be read or compiled, a bad runner or its options.
        MissingDependency: the runner needs an extra that is not installed.
        OperationFailed: the pipeline raised while it ran (the message is one line).
    """
    if log_level not in LOG_LEVELS:
        raise invalid_field(
            "log_level", "run_pipeline", "one of " + ", ".join(LOG_LEVELS), log_level
        )
    path = Path(path)
    _compile(path)
    argv = pipeline_argv(path, args, runner, workers=workers, log_level=log_level)
    from mlengine.beam._compat import import_beam, install_offline_direct_runner

    import_beam()
    install_offline_direct_runner()
    with _as_main(path, argv), _beam_log_level(log_level):
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as exit_:
            return _exit_code(exit_.code)
        except KeyboardInterrupt:
            raise
        except Exception as error:
            if log_level in ("debug", "info"):
                traceback.print_exc()
            raise OperationFailed(f"The pipeline {path.name} failed: {_summary(error)}") from error
    return 0

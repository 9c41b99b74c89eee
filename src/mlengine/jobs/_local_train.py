"""``mlengine local train``: run a trainer in the foreground, as ``gcloud ai-platform local
train`` does (AIPLATFORM.md §5.3, "gcloud local train emulation").

* The working directory is the parent of the package path, and the trainer runs as
  ``python -m MODULE USER_ARGS --job-dir DIR``. The package is not installed (gcloud does not
  install it either). Without a package path the current directory is the working directory
  (gcloud would use the parent of the current directory; we treat the current directory as the
  place that holds the package, which is what users mean).
* ``TF_CONFIG`` is gcloud's: ``job`` is an object ``{"job_name": MODULE, "args": [...]}`` (the
  args include ``--job-dir DIR``); without ``--distributed``, ``task`` and ``cluster`` are
  empty. With ``--distributed``, ports count up from ``start_port``: the primary (``chief``),
  then the parameter servers (default 2), then the workers (default 2), all on ``localhost``;
  evaluators (default 0) get ``task.type = "evaluator"`` and are not in the cluster.
* Also set, as the `local` runner does: ``CLOUD_ML_JOB_ID`` = ``local_<module with dots as
  underscores>`` (a valid job id naming what ran), ``AIP_MODEL_DIR`` and friends under the job
  dir, and PyTorch's ``MASTER_ADDR``/``MASTER_PORT``/``WORLD_SIZE``/``RANK``/``LOCAL_RANK``.
* One process: it inherits the terminal; its exit code is the result. Ctrl-C reaches it
  directly (it is in our process group) and SIGTERM is forwarded. Distributed: one process
  per replica, each output line prefixed with the replica's name (``worker-replica-1: ...``);
  the primary's exit code is the result, and when the primary exits the others get SIGTERM,
  then SIGKILL after 5 s.

A trainer killed by signal N gives 128 + N, as a shell reports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TextIO

from mlengine.errors import InvalidArgument, OperationFailed
from mlengine.jobs._cluster import (
    cluster_spec,
    local_train_tf_config,
    output_dirs_environment,
    pytorch_environment,
    trainer_command,
)
from mlengine.jobs.runners._base import ReplicaSpec

__all__ = ["DEFAULT_PARAMETER_SERVER_COUNT", "DEFAULT_WORKER_COUNT", "run_local_train"]

DEFAULT_PARAMETER_SERVER_COUNT = 2
DEFAULT_WORKER_COUNT = 2
_HOST = "localhost"
_PRIMARY_KEY = "chief"
_TERMINATE_GRACE_S = 5.0
_IGNORED_FLAG_WARNING = (
    "WARNING: {flag} is ignored if --distributed is not provided.\n"
    "Did you mean to run distributed training?"
)


def run_local_train(
    module: str,
    package_path: Path | None,
    job_dir: str | None,
    user_args: Sequence[str],
    *,
    distributed: bool = False,
    worker_count: int | None = None,
    parameter_server_count: int | None = None,
    evaluator_count: int = 0,
    start_port: int = 27182,
    out: TextIO | None = None,
    python: str = sys.executable,
    replace_process: bool = False,
) -> int:
    """Run `module` in the foreground as gcloud's local train does (module docstring).

    Args:
        module: the trainer module (``trainer.task``).
        package_path: the trainer package directory; its parent is the working directory.
            None: the current directory holds the package.
        job_dir: passed as ``--job-dir DIR`` after the user args, or None.
        user_args: the trainer's own arguments.
        distributed: run a local cluster: a primary, parameter servers, workers, evaluators.
        worker_count: workers with `distributed` (None: 2); warned about and ignored without.
        parameter_server_count: parameter servers with `distributed` (None: 2); likewise.
        evaluator_count: evaluators with `distributed`; likewise.
        start_port: the primary's port; the other cluster members take the next ones.
        out: where prefixed replica output goes when distributed (None: ``sys.stdout`` at the
            time of the call).
        python: the interpreter that runs the trainer.
        replace_process: without --distributed, replace the calling process with the
            trainer (exec) instead of waiting for a child; this function then never returns.

    Returns:
        The primary's exit code (128 + N when killed by signal N).

    Raises:
        InvalidArgument: the package path does not exist, the module cannot be found under the
            working directory, or a count is negative. Nothing has been started then.
        OperationFailed: a trainer process could not be started.
    """
    cwd = _working_directory(module, package_path)
    if not distributed:
        for flag, value in (
            ("--parameter-server-count", parameter_server_count),
            ("--worker-count", worker_count),
            ("--evaluator-count", evaluator_count),
        ):
            if value:
                print(_IGNORED_FLAG_WARNING.format(flag=flag), file=sys.stderr)
        servers, workers, evaluators = 0, 0, 0
    else:
        servers = _count(
            "--parameter-server-count", parameter_server_count, DEFAULT_PARAMETER_SERVER_COUNT
        )
        workers = _count("--worker-count", worker_count, DEFAULT_WORKER_COUNT)
        evaluators = _count("--evaluator-count", evaluator_count, 0)
    command = trainer_command(python, module, user_args, job_dir)
    trainer_args = command[3:]
    base_env = {
        **os.environ,
        "CLOUD_ML_JOB_ID": "local_" + module.replace(".", "_"),
        "PYTHONUNBUFFERED": "1",
        **output_dirs_environment(job_dir),
    }
    if not distributed:
        primary = ReplicaSpec("master", 0)
        env = {
            **base_env,
            **pytorch_environment(primary, [primary], _HOST, start_port),
            "TF_CONFIG": json.dumps(local_train_tf_config(module, trainer_args)),
        }
        if replace_process:
            # The CLI becomes the trainer (exec): no second interpreter stays around, and the
            # exit code and signals are the trainer's own.
            sys.stdout.flush()
            sys.stderr.flush()
            os.chdir(cwd)
            os.execve(command[0], list(command), env)
        return _run_single(command, cwd, env)

    replicas = [ReplicaSpec("master", 0)]
    replicas += [ReplicaSpec("ps", i) for i in range(servers)]
    replicas += [ReplicaSpec("worker", i) for i in range(workers)]
    ports = {r.name: start_port + n for n, r in enumerate(replicas)}
    replicas += [ReplicaSpec("evaluator", i) for i in range(evaluators)]
    cluster = cluster_spec(replicas, ports, _HOST, primary_key=_PRIMARY_KEY)
    envs = {}
    for replica in replicas:
        task_type = _PRIMARY_KEY if replica.is_primary else replica.task_type
        tf_config = local_train_tf_config(module, trainer_args, cluster, task_type, replica.index)
        envs[replica.name] = {
            **base_env,
            **pytorch_environment(replica, replicas, _HOST, start_port),
            "TF_CONFIG": json.dumps(tf_config),
        }
    return _run_distributed(command, cwd, replicas, envs, out or sys.stdout)


def _working_directory(module: str, package_path: Path | None) -> Path:
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts):
        raise InvalidArgument(f"The module name {module!r} is not a valid Python module name.")
    if package_path is None:
        root = Path.cwd()
    else:
        path = Path(package_path).absolute()
        if not path.is_dir():
            raise InvalidArgument(f"The package path {path} does not exist or is not a directory.")
        root = path.parent
    module_path = root.joinpath(*parts)
    if not (
        module_path.with_name(module_path.name + ".py").is_file()
        or (module_path / "__main__.py").is_file()
    ):
        raise InvalidArgument(
            f"Cannot find module {module!r} under {root}: "
            f"expected {module_path}.py or {module_path}/__main__.py."
        )
    return root


def _count(flag: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 0:
        raise InvalidArgument(f"The value of {flag} must be an integer >= 0. Got {value}.")
    return value


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


@contextlib.contextmanager
def _signals_forwarded(on_term: Callable[[int], None]) -> Iterator[None]:
    """While waiting for trainers: SIGTERM is handed to `on_term`, SIGINT is left to the
    trainers (the terminal sends Ctrl-C to the whole foreground process group, so they get it
    themselves) and must not interrupt the wait. Only possible in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        on_term(signum)

    def ignore(signum: int, frame: FrameType | None) -> None:
        pass

    previous_term = signal.signal(signal.SIGTERM, forward)
    previous_int = signal.signal(signal.SIGINT, ignore)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _start(
    command: Sequence[str], cwd: Path, env: dict[str, str], *, piped: bool = False
) -> subprocess.Popen[bytes]:
    """Start one trainer; `piped`: stdin from /dev/null, stdout and stderr into one pipe."""
    try:
        if not piped:
            return subprocess.Popen(command, cwd=cwd, env=env)
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as e:
        raise OperationFailed(f"Cannot start the trainer {command[0]!r}: {e}") from e


def _run_single(command: Sequence[str], cwd: Path, env: dict[str, str]) -> int:
    process = _start(command, cwd, env)
    with _signals_forwarded(process.send_signal):
        return _exit_code(process.wait())


def _run_distributed(
    command: Sequence[str],
    cwd: Path,
    replicas: Sequence[ReplicaSpec],
    envs: dict[str, dict[str, str]],
    out: TextIO,
) -> int:
    lock = threading.Lock()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    pumps: list[threading.Thread] = []
    try:
        # Like gcloud, the cluster members start before the primary.
        for replica in sorted(replicas, key=lambda r: r.is_primary):
            process = _start(command, cwd, envs[replica.name], piped=True)
            processes[replica.name] = process
            pump = threading.Thread(
                target=_prefix_lines,
                args=(process.stdout, f"{replica.name}: ", out, lock),
                daemon=True,
            )
            pump.start()
            pumps.append(pump)
        primary = processes[next(r.name for r in replicas if r.is_primary)]

        def forward(signum: int) -> None:
            for process in processes.values():
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

        with _signals_forwarded(forward):
            code = primary.wait()
    finally:
        _terminate(list(processes.values()))
        for pump in pumps:
            pump.join(1.0)
    return _exit_code(code)


def _prefix_lines(pipe: IO[bytes], prefix: str, out: TextIO, lock: threading.Lock) -> None:
    for raw in iter(pipe.readline, b""):
        text = raw.decode("utf-8", "replace")
        if not text.endswith("\n"):
            text += "\n"
        with lock:
            out.write(prefix + text)
            out.flush()
    pipe.close()


def _terminate(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""The `local` runner: each replica is a process on this machine, under a small supervisor.

Each replica runs as ``python -S -E _supervisor.py ... -- python -m MODULE ARGS --job-dir DIR``
in a new session, so the supervisor's pid is also the process group id of the replica: the
trainer and everything it starts share that group, and `stop` signals the whole group. The
supervisor writes the replica's log (JSON lines) and, when the trainer exits, its exit code to
an exit file; the state returned by `start` names these files, so another process (a restarted
scheduler) can poll and stop the run. A pid is trusted only while ``/proc/<pid>/cmdline``
still contains the replica's exit-file path, so a reused pid is never signalled.

GPUs: when the TrainingInput asks for accelerators (``<type>Config.acceleratorConfig.count``,
or scale tier ``BASIC_GPU``, which means one GPU for the master), every replica gets
``CUDA_VISIBLE_DEVICES``: device indices handed out in contiguous blocks in replica order
(master first), and ``""`` for replicas without accelerators, as on a machine without GPUs.
Indices are not checked against the devices present. Jobs without accelerators leave
``CUDA_VISIBLE_DEVICES`` as the runner's own environment has it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine._processes import process_exists
from mlengine.errors import OperationFailed
from mlengine.jobs._cluster import (
    allocate_ports,
    cluster_spec,
    primary_key_for,
    replica_environment,
    trainer_command,
)
from mlengine.jobs.runners._base import (
    LaunchSpec,
    ReplicaPhase,
    ReplicaSpec,
    ReplicaStatus,
    Runner,
    RunnerState,
)

__all__ = ["SUPERVISOR_PATH", "LocalRunner"]

SUPERVISOR_PATH = str(Path(__file__).with_name("_supervisor.py"))
_HOST = "127.0.0.1"
_KILL_WAIT_S = 5.0
"""How long `stop` waits for processes to vanish after SIGKILL."""
_POLL_S = 0.02
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_HAVE_PROC = os.path.isdir("/proc/self")
_STATE_FILE = "runner-state.json"
"""Linux: processes are found through /proc. Elsewhere a group is checked with killpg(0)."""
_CONFIG_FIELDS = {
    "master": "masterConfig",
    "chief": "masterConfig",
    "worker": "workerConfig",
    "ps": "parameterServerConfig",
    "evaluator": "evaluatorConfig",
}

_children: dict[int, subprocess.Popen[bytes]] = {}
"""Supervisors started by this process, by pid: shared by every `LocalRunner` so that any of
them reaps a supervisor that exits (no zombies), whichever instance started it."""
_children_lock = threading.Lock()


class LocalRunner(Runner):
    """Runs each replica as a supervised process group on this machine.

    Stateless: everything `poll` and `stop` need is in the `RunnerState` from `start`, so a
    fresh instance, in this process or another, can take over a run.
    """

    name = "local"

    def start(self, spec: LaunchSpec) -> RunnerState:
        """Start every replica of `spec` under its own supervisor.

        Each replica gets ``spec.run_dir/<replica name>/`` as its working directory, writes
        ``spec.log_dir/<replica name>.log`` and records its exit code in
        ``spec.run_dir/<replica name>.exit``.

        Returns:
            ``{"replicas": [{"task_type", "index", "pid", "exit_file", "log_file",
            "cmdline_marker"}], "run_dir", "log_dir"}``; ``pid`` is the supervisor's pid, which
            is also the process group of the replica.

        Raises:
            OperationFailed: a replica could not be started; the replicas already started are
                stopped first.
        """
        # Absolute paths: the state must mean the same thing to a process elsewhere.
        spec = dataclasses.replace(
            spec, run_dir=spec.run_dir.absolute(), log_dir=spec.log_dir.absolute()
        )
        if sum(1 for r in spec.replicas if r.is_primary) != 1:
            raise OperationFailed(f"Job {spec.job_id} must have exactly one primary replica.")
        try:
            ports = dict(
                zip(
                    (r.name for r in spec.replicas),
                    allocate_ports(len(spec.replicas), _HOST),
                    strict=True,
                )
            )
            cluster = cluster_spec(
                spec.replicas, ports, _HOST, primary_key=primary_key_for(spec.training_input)
            )
            devices = _visible_devices(spec.training_input, spec.replicas)
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            spec.log_dir.mkdir(parents=True, exist_ok=True)
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise OperationFailed(f"Cannot prepare the replicas of job {spec.job_id}: {e}") from e
        python = spec.python
        if os.sep in python and not os.path.isabs(python):
            python = os.path.abspath(python)  # the trainer's cwd is not ours
        command = trainer_command(python, spec.module, spec.args, spec.job_dir)
        started: list[dict[str, Any]] = []
        state: RunnerState = {
            "replicas": started,
            "run_dir": str(spec.run_dir),
            "log_dir": str(spec.log_dir),
        }
        for replica in spec.replicas:
            try:
                started.append(self._launch(spec, replica, cluster, ports, devices, command))
                _record_state(spec.run_dir, state)  # for `leftover`, should we stop right now
            except (OSError, ValueError, KeyError) as e:
                self.stop(state, grace_s=1.0)
                raise OperationFailed(
                    f"Cannot start {replica.name} of job {spec.job_id}: {e}"
                ) from e
        return state

    def leftover(self, run_dir: Path) -> RunnerState | None:
        """The replicas a `start` into `run_dir` recorded in ``runner-state.json`` as it
        launched them (each one as soon as it runs), or None when it recorded none."""
        try:
            state = json.loads((run_dir.absolute() / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or not isinstance(state.get("replicas"), list):
            return None
        return state if state["replicas"] else None

    def poll(self, state: RunnerState) -> list[ReplicaStatus]:
        """Report each replica: EXITED with its code, RUNNING, or LOST (no exit code left).

        Never blocks. Works on a state produced by another process.
        """
        _reap()
        statuses = []
        for entry in state["replicas"]:
            replica = ReplicaSpec(entry["task_type"], int(entry["index"]))
            code = _read_exit_code(entry["exit_file"])
            if code is None and _supervisor_alive(entry):
                statuses.append(ReplicaStatus(replica, ReplicaPhase.RUNNING))
                continue
            if code is None:  # it may have written the file just before exiting
                code = _read_exit_code(entry["exit_file"])
            if code is None:
                statuses.append(ReplicaStatus(replica, ReplicaPhase.LOST))
            else:
                statuses.append(ReplicaStatus(replica, ReplicaPhase.EXITED, code))
        return statuses

    def stop(self, state: RunnerState, grace_s: float = 5.0) -> None:
        """Terminate every process of the run: SIGTERM to each replica's process group, then,
        after `grace_s`, SIGKILL to whatever is left.

        Supervisors ignore SIGTERM and record how their trainer ended; on SIGKILL the trainers
        and their descendants are killed before their supervisor, so that the supervisor still
        records the exit code (-9). Idempotent; returns once no process of the run is left
        (or `_KILL_WAIT_S` after SIGKILL, for a process stuck in the kernel).
        """
        entries = list(state["replicas"])
        _signal_groups(entries, signal.SIGTERM)
        if not _wait_gone(entries, grace_s):
            _signal_groups(entries, signal.SIGKILL, spare_supervisor=True)
            if not _wait_gone(entries, 1.0, supervisors_only=True):
                _signal_groups(entries, signal.SIGKILL)
            _wait_gone(entries, _KILL_WAIT_S)
        _reap()

    def _launch(
        self,
        spec: LaunchSpec,
        replica: ReplicaSpec,
        cluster: Mapping[str, list[str]],
        ports: Mapping[str, int],
        devices: Mapping[str, str],
        command: Sequence[str],
    ) -> dict[str, Any]:
        cwd = spec.run_dir / replica.name
        cwd.mkdir(parents=True, exist_ok=True)
        exit_file = spec.run_dir / f"{replica.name}.exit"
        for stale in (exit_file, Path(f"{exit_file}.pids"), Path(f"{exit_file}.tmp")):
            stale.unlink(missing_ok=True)
        log_file = spec.log_dir / f"{replica.name}.log"
        env = {**os.environ, **spec.env, **replica_environment(spec, replica, cluster, ports)}
        if replica.name in devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[replica.name]
        argv = [
            sys.executable, "-S", "-E", SUPERVISOR_PATH,
            "--log-file", str(log_file), "--exit-file", str(exit_file), "--cwd", str(cwd),
            "--", *command,
        ]  # fmt: skip
        with (
            open(spec.run_dir / f"{replica.name}.supervisor.err", "ab") as supervisor_err,
            _signals_blocked(),
        ):
            process = subprocess.Popen(
                argv,
                env=env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=supervisor_err,
            )
        with _children_lock:
            _children[process.pid] = process
        return {
            "task_type": replica.task_type,
            "index": replica.index,
            "pid": process.pid,
            "exit_file": str(exit_file),
            "log_file": str(log_file),
            "cmdline_marker": str(exit_file),
        }


def _record_state(run_dir: Path, state: RunnerState) -> None:
    """Write `state` to ``run_dir/runner-state.json`` atomically (temp file and rename)."""
    temporary = run_dir / f".{_STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state))
    os.replace(temporary, run_dir / _STATE_FILE)


def _visible_devices(
    training_input: Mapping[str, Any], replicas: Sequence[ReplicaSpec]
) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` per replica name; empty when the job asks for no GPU."""
    tier = str(training_input.get("scaleTier") or "").upper().replace("-", "_")
    counts = {}
    for replica in replicas:
        config = training_input.get(_CONFIG_FIELDS.get(replica.task_type, "")) or {}
        count = int((config.get("acceleratorConfig") or {}).get("count") or 0)
        if replica.is_primary and not count and tier == "BASIC_GPU":
            count = 1
        counts[replica.name] = count
    if not any(counts.values()):
        return {}
    devices, next_index = {}, 0
    for replica in replicas:
        count = counts[replica.name]
        devices[replica.name] = ",".join(str(i) for i in range(next_index, next_index + count))
        next_index += count
    return devices


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread; a process started meanwhile inherits the mask,
    so a `stop` right after `start` cannot kill a supervisor before its handler is set."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _reap() -> None:
    with _children_lock:
        for pid, process in list(_children.items()):
            if process.poll() is not None:
                del _children[pid]


def _read_exit_code(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _supervisor_alive(entry: Mapping[str, Any]) -> bool:
    """Whether the replica's supervisor still runs (a zombie counts as gone)."""
    pid = int(entry["pid"])
    with _children_lock:
        process = _children.get(pid)
        if process is not None:
            if process.poll() is None:
                return True
            del _children[pid]
            return False
    return _has_marker(pid, entry["cmdline_marker"])


def _has_marker(pid: int, marker: str) -> bool:
    if not _HAVE_PROC:  # no way to check for a reused pid: trust it
        return process_exists(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()  # empty for a zombie
    except OSError:
        return False


def _process_groups() -> dict[int, list[int]]:
    """Live (not zombie) processes by process group id, read from /proc."""
    groups: dict[int, list[int]] = {}
    if not _HAVE_PROC:
        return groups
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X"):
            groups.setdefault(int(fields[2]), []).append(int(name))
    return groups


def _members(entry: Mapping[str, Any], groups: Mapping[int, list[int]]) -> list[int]:
    """The live processes of the replica's group, or [] when its pgid now names another group.

    While any process of our group lives, Linux cannot hand its id to a new process; so a live
    process with that pid but without our marker means our group is gone.
    """
    pgid = int(entry["pid"])
    if not _HAVE_PROC:  # the group as one unit
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = groups.get(pgid, [])
    if pgid in members:
        try:
            with open(f"/proc/{pgid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            cmdline = b""
        # An empty command line is a process on its way out: still ours.
        if cmdline and entry["cmdline_marker"].encode() not in cmdline:
            return []
    return members


def _signal_groups(
    entries: Sequence[Mapping[str, Any]], signum: int, *, spare_supervisor: bool = False
) -> None:
    groups = _process_groups()
    for entry in entries:
        pgid = int(entry["pid"])
        members = _members(entry, groups)
        if not members:
            continue
        if spare_supervisor:
            for pid in members:
                if pid != pgid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signum)


def _wait_gone(
    entries: Sequence[Mapping[str, Any]], timeout_s: float, *, supervisors_only: bool = False
) -> bool:
    """Wait until the replicas' groups (or just their supervisors) are gone; True if they are."""
    deadline = time.monotonic() + timeout_s
    while True:
        _reap()
        if supervisors_only:
            alive = any(_supervisor_alive(entry) for entry in entries)
        else:
            groups = _process_groups()
            with _children_lock:  # our own supervisors count until reaped
                unreaped = any(int(entry["pid"]) in _children for entry in entries)
            alive = unreaped or any(_members(entry, groups) for entry in entries)
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)

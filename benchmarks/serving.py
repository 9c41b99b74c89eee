"""Online prediction throughput and latency: mlengine against MLflow, and against the floor.

What is measured, all in one run, on one scikit-learn model (``RandomForestClassifier``, 100
trees, fitted on iris: ~4 ms of fixed cost per ``predict`` call whatever the row count, so
batching is where throughput comes from):

* ``mlengine``: ``mlengine server run`` (1 worker, a temporary ``MLENGINE_HOME``), the model
  created with the SDK and the version from a directory holding ``model.joblib``;
  ``POST /v1/projects/default/models/iris:predict`` with ``{"instances": [...]}``.
* ``MLflow``: ``mlflow models serve -m DIR --env-manager local --workers 1`` on the same fitted
  object saved with ``mlflow.sklearn.save_model``; ``POST /invocations`` with the same body.
  MLflow and mlengine do not share a virtualenv: MLflow lives in ``.venv-bench-mlflow/`` at the
  repository root, created on the first run (``python -m venv`` + ``pip install mlflow
  scikit-learn==X numpy==Y``, the versions of this environment, so the pickle loads the same)
  and reused afterwards. When that fails the run says so and goes on without MLflow.
* ``bare floor``: a minimal ASGI app that reads the body and returns a constant JSON, under the
  same uvicorn as mlengine (same event loop, HTTP parser, log level): what the server stack
  alone can do.
* ``in-process``: ``model.predict`` on 1, 32, 64 and 1024 rows in a loop in this process
  (calls/s): what the model alone can do; and the same through mlengine's own predictor
  (``SklearnPredictor.predict`` on JSON-like lists, the call a batch makes). From the latter
  and the bare floor's CPU per request, the report prints a model-bound ceiling for each
  request size at concurrency 64: ``1 / (floor CPU per request + predictor CPU per request)``
  with batches of ``min(64 x instances, 1024)`` rows (1024 is mlengine's default
  ``max_batch_size``) — what a server with no overhead of its own could reach on one core.
  ``orjson.loads`` of each request body is timed too (the least any Python JSON server does
  with a request), and a second, parse-and-model-bound ceiling adds it per request.

Every server is started by this script on a free ``127.0.0.1`` port, measured, and stopped
(its whole process group); the bare floor and mlengine run side by side (see the paired rounds),
MLflow after them. Each server runs at uvicorn ``--log-level info`` (``--server-log-level``
gives all three another level), its log written to a file. Access logs: mlengine and MLflow at
their defaults (mlengine logs no line per request unless ``--access-log``; MLflow runs uvicorn
with its access log on, ~0.1 ms of its ~15 ms per request); the bare floor runs with
``--no-access-log`` like mlengine, since with uvicorn's default access log a bare endpoint
spends about two thirds of its CPU on that line (~0.1 ms of ~0.15 ms per request, measured): a
floor with it would flatter every ratio against it.

Load: every (instances per request, concurrency) cell, instances in {1, 32} and concurrency in
{1, 8, 64}, is driven for ``--duration`` seconds (after ``--warmup`` seconds not counted) by
closed-loop keep-alive connections, one request in flight per connection. The load generator is
``wrk`` when it is installed (``apt-get install wrk``), else a small asyncio HTTP/1.1 client in
this process; the same one drives every target of a run, and the run says which. A cell counts
only with no error: every answer must be HTTP 200 and no connection may fail. Before it is
loaded, each server's answers to 1 and 32 instances are checked against the in-process
predictions.

CPU placement (``--pin``, the default with 2 CPUs or more): the servers and the in-process loop
run on CPU 0, the load generator on the others, so the server side gets the same single core
whatever the target, and the load generator does not steal it.

Paired rounds (``--pairs N``, default 5, ``--quick`` 3): the bare floor and mlengine stay up
side by side, and at concurrency 64 each request size is measured N times, the two servers back
to back (3 s each, the one going first alternating). On a shared virtual machine the host's speed
drifts within a run (the same server under the same load was seen at 0.205 and 0.281 ms of CPU
per request a few seconds apart), so cells measured a minute apart can differ by a third for no
reason of their own; the floor target is judged on the median ratio of the pairs.

Targets, at concurrency 64, for 1 and for 32 instances per request (informational: the exit
code is 0 whether they are met or not, 1 on an error):
mlengine >= 3x MLflow's requests/s with a lower p99, and mlengine >= 60% of the bare floor's
requests/s (the median of the paired rounds).

Usage: ``python benchmarks/serving.py [--duration S] [--warmup S] [--quick] [--json]
[--load-generator auto|wrk|python] [--no-mlflow] [--no-pin] [--server-log-level LEVEL]
[--pairs N] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _main import fail, print_results, scratch_directory
from _main import progress as _progress
from _proc import group_cpu_s, machine_busy_s

REPO_ROOT = Path(__file__).resolve().parent.parent
MLFLOW_VENV = REPO_ROOT / ".venv-bench-mlflow"
MLFLOW_MARKER = ".mlengine-bench-installed"

INSTANCES = (1, 32)
CONCURRENCY = (1, 8, 64)
IN_PROCESS_ROWS = (1, 32, 64, 1024)
BATCH_LIMIT = 1024
"""mlengine's default ``max_batch_size``: at concurrency 64 a batch holds min(64 x k, 1024) rows."""
TARGET_CONCURRENCY = 64
MLFLOW_RATIO_TARGET = 3.0
FLOOR_FRACTION_TARGET = 0.60
PAIRED_ROUNDS = 5
"""Back-to-back rounds of the bare floor and mlengine at the target concurrency (--quick: 3)."""
PAIRED_SECONDS = 3.0
"""Seconds per server and round (the run's cell duration when shorter)."""
BUSY_MACHINE_CPUS = 0.25
"""Other processes using more than this many CPUs during a cell make the run say so."""

SERVER_START_TIMEOUT_S = 120.0
VERSION_TIMEOUT_S = 180.0
VENV_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 1200.0
SAVE_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
"""Limit for one request under load; a request slower than this counts as an error."""

MODEL_NAME = "iris"
TREES = 100

BARE_APP = '''\
"""A bare ASGI app: reads the request body, answers a constant JSON. The serving floor."""

BODY = b'{"predictions":[0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
'''

SAVE_MLFLOW_MODEL = """\
import shutil
import sys
import joblib
import mlflow.sklearn

model = joblib.load(sys.argv[1])
try:  # MLflow's default format (skops) needs the forest's Tree type trusted explicitly
    mlflow.sklearn.save_model(
        model,
        sys.argv[2],
        pip_requirements=sys.argv[3:],
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    print("saved (skops)", sys.argv[2])
except Exception as error:  # an MLflow without skops: its older default, cloudpickle
    print("skops failed:", error, file=sys.stderr)
    shutil.rmtree(sys.argv[2], ignore_errors=True)
    mlflow.sklearn.save_model(
        model, sys.argv[2], pip_requirements=sys.argv[3:], serialization_format="cloudpickle"
    )
    print("saved (cloudpickle)", sys.argv[2])
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non200")
  end
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, "
    .. "\\"non200\\": %d, \\"errors\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    bad, e.connect + e.read + e.write + e.timeout))
end
"""


class BenchmarkError(Exception):
    """Something the benchmark needs failed; the message says what and shows its output."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_tail(path: Path, lines: int = 40) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError as error:
        return f"(cannot read {path}: {error})"


def _run(
    command: Sequence[str],
    *,
    timeout: float,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command` to completion.

    Raises:
        BenchmarkError: it timed out or exited non-zero.
    """
    try:
        result = subprocess.run(
            list(command),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"{what} took longer than {timeout:.0f} s: {command}") from error
    except OSError as error:
        raise BenchmarkError(f"{what} could not start: {error}") from error
    if result.returncode != 0:
        output = _tail(result.stderr) or _tail(result.stdout)
        raise BenchmarkError(
            f"{what} failed (exit status {result.returncode}): {command}\n{output}"
        )
    return result


# -- CPU placement -------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which CPUs the servers and the load generator get (None: no pinning)."""

    server: frozenset[int] | None
    client: frozenset[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Placement:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return cls(None, None)
        if not pin or len(cpus) < 2:
            return cls(None, None)
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned (servers and load generator share every CPU)"
        return (
            f"servers and in-process loop on CPU {_cpus(self.server)}, load generator on CPU "
            f"{_cpus(self.client)}"
        )

    def preexec(self, cpus: frozenset[int] | None) -> Callable[[], None] | None:
        if cpus is None:
            return None

        def pin() -> None:
            os.sched_setaffinity(0, cpus)

        return pin


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


@contextlib.contextmanager
def _pinned(cpus: frozenset[int] | None) -> Any:
    """Run the body with this process on `cpus` (no-op for None)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- CPU accounting ------------------------------------------------------------------------


@dataclass
class CpuSample:
    server: float | None
    machine: float | None
    own: float  # this process and its waited-for children (wrk)

    @classmethod
    def take(cls, server_pgid: int | None) -> CpuSample:
        times = os.times()
        own = times.user + times.system + times.children_user + times.children_system
        server = None if server_pgid is None else group_cpu_s(server_pgid)
        return cls(server, machine_busy_s(), own)


def _cpu_delta(before: CpuSample, after: CpuSample) -> tuple[float | None, float | None]:
    """(server CPU seconds, CPU seconds of every other process: not the server, not this
    process, not the load generator) between two samples."""
    if before.server is None or after.server is None:
        return None, None
    server = max(0.0, after.server - before.server)
    if before.machine is None or after.machine is None:
        return server, None
    other = (after.machine - before.machine) - server - (after.own - before.own)
    return server, max(0.0, other)


# -- servers -------------------------------------------------------------------------------


class Server:
    """A server process this run started (in its own process group), and how to reach it."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        port: int,
        predict_path: str,
        health_path: str,
        log: Path,
        env: Mapping[str, str],
        cwd: Path,
        placement: Placement,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.port = port
        self.predict_path = predict_path
        self.health_path = health_path
        self.log = log
        self.env = dict(env)
        self.cwd = cwd
        self.placement = placement
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        """Start it and wait until ``health_path`` answers 200.

        Raises:
            BenchmarkError: it exited, or did not answer in time (with its log's end).
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=self.placement.preexec(self.placement.server),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(
                    f"{self.name} exited with status {self.process.returncode} while starting: "
                    f"{self.command}\n--- {self.log} ---\n{_read_tail(self.log)}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url + self.health_path, timeout=2.0) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.2)
        raise BenchmarkError(
            f"{self.name} did not answer {self.health_path} within {timeout:.0f} s: "
            f"{self.command}\n--- {self.log} ---\n{_read_tail(self.log)}"
        )

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL it after `STOP_TIMEOUT_S`."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _progress(f"WARNING: {self.name} did not stop on SIGTERM; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)

    def post(self, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
        """One request to the predict path; (status, body)."""
        request = urllib.request.Request(
            self.url + self.predict_path,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return int(answer.status), answer.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()


# -- the model -----------------------------------------------------------------------------


@dataclass
class Model:
    """The fitted model, where it is saved, and the request bodies and expected answers."""

    estimator: Any
    joblib_dir: Path
    rows: dict[int, list[list[float]]]
    expected: dict[int, list[int]]

    def body(self, instances: int) -> bytes:
        return json.dumps({"instances": self.rows[instances]}, separators=(",", ":")).encode()


def build_model(root: Path) -> Model:
    """Fit the forest on iris and save it as ``model.joblib`` (mlengine's version origin)."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    data = load_iris()
    estimator = RandomForestClassifier(n_estimators=TREES, random_state=0)
    estimator.fit(data.data, data.target)
    directory = root / "model-joblib"
    directory.mkdir(parents=True)
    joblib.dump(estimator, directory / "model.joblib")
    rows: dict[int, list[list[float]]] = {}
    expected: dict[int, list[int]] = {}
    for count in sorted({*INSTANCES, *IN_PROCESS_ROWS}):
        index = np.linspace(0, len(data.data) - 1, count).astype(int)  # every class
        rows[count] = [[float(v) for v in row] for row in data.data[index]]
        expected[count] = [int(v) for v in estimator.predict(np.asarray(rows[count]))]
    return Model(estimator, directory, rows, expected)


def _predictions(raw: bytes) -> list[int]:
    answer = json.loads(raw)
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        raise ValueError(f"not a {{'predictions': [...]}} answer: {raw[:200]!r}")
    return [int(value) for value in answer["predictions"]]


def check_answers(server: Server, model: Model) -> None:
    """Each instance count's answer equals the in-process predictions.

    Raises:
        BenchmarkError: a non-200 answer or different predictions.
    """
    for count in INSTANCES:
        status, raw = server.post(model.body(count))
        if status != 200:
            raise BenchmarkError(
                f"{server.name} answered HTTP {status} to {count} instance(s): {raw[:500]!r}\n"
                f"--- {server.log} ---\n{_read_tail(server.log)}"
            )
        if server.name == "bare floor":
            continue  # a constant: only the status is checked
        try:
            got = _predictions(raw)
        except ValueError as error:
            raise BenchmarkError(f"{server.name}: {error}") from None
        if got != model.expected[count]:
            raise BenchmarkError(
                f"{server.name} predicted {got} for {count} instance(s); in-process "
                f"model.predict gives {model.expected[count]}"
            )


def _calls_per_s(call: Callable[[], Any], seconds: float) -> tuple[int, float]:
    for _ in range(3):  # warm-up
        call()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        call()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls, now - start


def in_process_floor(model: Model, seconds: float) -> list[dict[str, Any]]:
    """``orjson.loads`` of the request bodies (rows: instances per request), then
    ``model.predict`` on numpy arrays and mlengine's predictor on lists, calls/s on
    `IN_PROCESS_ROWS` rows; one thread."""
    import numpy as np
    import orjson

    from mlengine.prediction.predictors import load_predictor

    predictor = load_predictor(model.joblib_dir, "SCIKIT_LEARN")
    results = []
    for instances in INSTANCES:  # what any Python JSON server does with each request first
        body = model.body(instances)
        calls, elapsed = _calls_per_s(lambda body=body: orjson.loads(body), seconds / 4)
        results.append(
            {
                "what": "orjson.loads body",
                "rows": instances,
                "calls": calls,
                "calls_per_s": calls / elapsed,
                "ms_per_call": 1000.0 * elapsed / calls,
                "rows_per_s": instances * calls / elapsed,
            }
        )
    for count in IN_PROCESS_ROWS:
        inputs = np.asarray(model.rows[count])
        rows = model.rows[count]
        for name, call in (
            ("model.predict", lambda inputs=inputs: model.estimator.predict(inputs)),
            ("mlengine predictor", lambda rows=rows: predictor.predict(rows)),
        ):
            calls, elapsed = _calls_per_s(call, seconds / 2)
            results.append(
                {
                    "what": name,
                    "rows": count,
                    "calls": calls,
                    "calls_per_s": calls / elapsed,
                    "ms_per_call": 1000.0 * elapsed / calls,
                    "rows_per_s": count * calls / elapsed,
                }
            )
    return results


def model_bound_ceiling(
    data: Mapping[str, Any], instances: int, *, parsing: bool = False
) -> float | None:
    """Requests/s at concurrency 64 of a server whose only costs are the bare floor's CPU per
    request and mlengine's predictor on full batches (`parsing`: and ``orjson.loads`` of the
    request body); None when not measured."""
    cells = {(c["target"], c["instances"], c["concurrency"]): c for c in data["cells"]}
    floor = cells.get(("bare floor", instances, TARGET_CONCURRENCY))
    batch = min(TARGET_CONCURRENCY * instances, BATCH_LIMIT)
    timing = next(
        (
            e
            for e in data["in_process"]
            if e.get("what") == "mlengine predictor" and e["rows"] == batch
        ),
        None,
    )
    if floor is None or timing is None or floor["server_cpu_ms_per_request"] is None:
        return None
    per_request_ms = floor["server_cpu_ms_per_request"] + timing["ms_per_call"] * instances / batch
    if parsing:
        parse = next(
            (
                e
                for e in data["in_process"]
                if e.get("what") == "orjson.loads body" and e["rows"] == instances
            ),
            None,
        )
        if parse is None:
            return None
        per_request_ms += parse["ms_per_call"]
    return 1000.0 / per_request_ms


# -- the MLflow environment ----------------------------------------------------------------


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def mlflow_requirements() -> list[str]:
    """What the MLflow venv gets: MLflow, and this environment's scikit-learn and numpy."""
    return [
        "mlflow",
        f"scikit-learn=={_version('scikit-learn')}",
        f"numpy=={_version('numpy')}",
    ]


def mlflow_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_mlflow_venv(venv: Path) -> Path:
    """Create or reuse the MLflow virtualenv; return its Python.

    Reused as it is when its marker file lists the same requirements; otherwise (re)installed
    with pip.

    Raises:
        BenchmarkError: venv or pip failed (or timed out).
    """
    requirements = mlflow_requirements()
    marker = venv / MLFLOW_MARKER
    python = mlflow_python(venv)
    with contextlib.suppress(OSError, ValueError):
        if python.exists() and json.loads(marker.read_text()) == requirements:
            _progress(f"reusing the MLflow virtualenv {venv}")
            return python
    if not python.exists():
        _progress(f"creating the MLflow virtualenv {venv} ...")
        _run(
            [sys.executable, "-m", "venv", str(venv)],
            timeout=VENV_TIMEOUT_S,
            what="python -m venv",
        )
    _progress(f"pip install {' '.join(requirements)} into {venv} (a few minutes the first time)")
    start = time.perf_counter()
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        timeout=PIP_TIMEOUT_S,
        what="pip install mlflow",
    )
    _progress(f"  installed in {time.perf_counter() - start:.0f} s")
    marker.write_text(json.dumps(requirements))
    return python


def _mlflow_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLENGINE_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # its uvicorn, not ours
    env["VIRTUAL_ENV"] = str(venv)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    env.pop("PYTHONPATH", None)
    return env


def mlflow_info(python: Path, venv: Path) -> dict[str, str]:
    script = (
        "import json, mlflow, sklearn, uvicorn, importlib.util as u; print(json.dumps({"
        "'mlflow': mlflow.__version__, 'scikit-learn': sklearn.__version__, "
        "'uvicorn': uvicorn.__version__, "
        "'uvloop': bool(u.find_spec('uvloop')), 'httptools': bool(u.find_spec('httptools'))}))"
    )
    result = _run(
        [str(python), "-c", script], timeout=120, what="mlflow version", env=_mlflow_env(venv)
    )
    return {k: str(v) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def save_mlflow_model(python: Path, venv: Path, model: Model, root: Path) -> Path:
    """``mlflow.sklearn.save_model`` of the same fitted object, in the MLflow venv."""
    script = root / "save_mlflow_model.py"
    script.write_text(SAVE_MLFLOW_MODEL)
    target = root / "model-mlflow"
    _run(
        [
            str(python),
            str(script),
            str(model.joblib_dir / "model.joblib"),
            str(target),
            f"scikit-learn=={_version('scikit-learn')}",
        ],
        timeout=SAVE_TIMEOUT_S,
        what="mlflow.sklearn.save_model",
        env=_mlflow_env(venv),
        cwd=root,
    )
    return target


# -- load generators -----------------------------------------------------------------------


@dataclass
class Cell:
    """One (target, instances per request, concurrency) measurement."""

    target: str
    instances: int
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non200: int
    errors: int
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        if self.server_cpu_s is None or self.requests == 0:
            return None
        return 1000.0 * self.server_cpu_s / self.requests

    @property
    def other_load(self) -> float | None:
        """CPUs' worth of work other processes did during the cell."""
        if self.other_cpu_s is None or self.seconds <= 0:
            return None
        return self.other_cpu_s / self.seconds

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def valid(self) -> bool:
        return self.non200 == 0 and self.errors == 0 and self.requests > 0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "requests_per_s": self.rps,
            "server_cpu_ms_per_request": self.server_cpu_ms_per_request,
            "other_load_cpus": self.other_load,
            "valid": self.valid,
        }


class LoadGenerator:
    name = "?"

    def run(
        self, url: str, body: bytes, concurrency: int, seconds: float
    ) -> tuple[int, float, float, float, int, int]:
        """Drive `url`; return (requests, seconds, p50 ms, p99 ms, non-200, errors)."""
        raise NotImplementedError


class Wrk(LoadGenerator):
    """``wrk -t1 -cN``: one thread, N keep-alive connections, a Lua script for POST bodies."""

    def __init__(self, executable: str, root: Path, placement: Placement) -> None:
        self.executable = executable
        self.root = root
        self.placement = placement
        self.name = f"wrk ({executable}), 1 thread"
        self._scripts: dict[bytes, Path] = {}

    def _script(self, body: bytes) -> Path:
        if body not in self._scripts:
            text = body.decode()
            if "]==]" in text:
                raise BenchmarkError("the request body cannot go in a Lua long string")
            path = self.root / f"wrk-{len(self._scripts)}.lua"
            path.write_text(WRK_SCRIPT.format(body=text))
            self._scripts[body] = path
        return self._scripts[body]

    def run(
        self, url: str, body: bytes, concurrency: int, seconds: float
    ) -> tuple[int, float, float, float, int, int]:
        duration = max(1, math.ceil(seconds))
        command = [
            self.executable,
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}s",
            f"--timeout={REQUEST_TIMEOUT_S:.0f}s",
            "-s",
            str(self._script(body)),
            url,
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=duration + REQUEST_TIMEOUT_S + 30,
                preexec_fn=self.placement.preexec(self.placement.client),
            )
        except subprocess.TimeoutExpired as error:
            raise BenchmarkError(f"wrk did not finish: {command}") from error
        line = next(
            (ln for ln in result.stdout.splitlines() if ln.startswith("WRKJSON ")),
            None,
        )
        if result.returncode != 0 or line is None:
            raise BenchmarkError(
                f"wrk failed (exit status {result.returncode}): {command}\n"
                f"{_tail(result.stdout)}\n{_tail(result.stderr)}"
            )
        data = json.loads(line.removeprefix("WRKJSON "))
        return (
            int(data["requests"]),
            data["duration_us"] / 1e6,
            data["p50_us"] / 1000.0,
            data["p99_us"] / 1000.0,
            int(data["non200"]),
            int(data["errors"]),
        )


class AsyncClient(LoadGenerator):
    """N asyncio coroutines, each with its own keep-alive HTTP/1.1 connection (raw sockets:
    a full HTTP client library would be the bottleneck against the bare floor)."""

    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        loop = "asyncio"
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401

            loop = "uvloop"
        self._uvloop = loop == "uvloop"
        self.name = f"asyncio HTTP/1.1 client in this process ({loop})"

    def run(
        self, url: str, body: bytes, concurrency: int, seconds: float
    ) -> tuple[int, float, float, float, int, int]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        request = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with _pinned(self.placement.client):
            if self._uvloop:
                import uvloop

                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    return runner.run(self._drive(host, port, request, concurrency, seconds))
            return asyncio.run(self._drive(host, port, request, concurrency, seconds))

    async def _drive(
        self, host: str, port: int, request: bytes, concurrency: int, seconds: float
    ) -> tuple[int, float, float, float, int, int]:
        latencies: list[float] = []
        counts = {"non200": 0, "errors": 0}
        start = time.perf_counter()
        deadline = start + seconds
        workers = [
            asyncio.create_task(self._worker(host, port, request, deadline, latencies, counts))
            for _ in range(concurrency)
        ]
        await asyncio.wait(workers, timeout=seconds + REQUEST_TIMEOUT_S + 10)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        elapsed = time.perf_counter() - start
        latencies.sort()
        return (
            len(latencies),
            elapsed,
            _percentile(latencies, 50) * 1000.0,
            _percentile(latencies, 99) * 1000.0,
            counts["non200"],
            counts["errors"],
        )

    async def _worker(
        self,
        host: str,
        port: int,
        request: bytes,
        deadline: float,
        latencies: list[float],
        counts: dict[str, int],
    ) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while time.perf_counter() < deadline:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        if writer is None:
                            reader, writer = await asyncio.open_connection(host, port)
                        assert reader is not None
                        began = time.perf_counter()
                        writer.write(request)
                        status, keep_alive = await _read_response(reader)
                        latencies.append(time.perf_counter() - began)
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                    counts["errors"] += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                if status != 200:
                    counts["non200"] += 1
                if not keep_alive:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; (status, whether the connection stays open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        raise ValueError("a response without Content-Length or chunked encoding")
    return status, headers.get("connection") != "close"


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of sorted values (NaN when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


def choose_generator(kind: str, root: Path, placement: Placement) -> LoadGenerator:
    executable = shutil.which("wrk")
    if kind == "wrk" and executable is None:
        raise BenchmarkError("--load-generator wrk: wrk is not installed (apt-get install wrk)")
    if kind in ("auto", "wrk") and executable is not None:
        return Wrk(executable, root, placement)
    return AsyncClient(placement)


# -- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one run needs: where, what, how long."""

    root: Path
    duration: float
    warmup: float
    placement: Placement
    generator: LoadGenerator
    log_level: str
    paired_rounds: int = PAIRED_ROUNDS
    cells: list[Cell] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def measure(self, server: Server, model: Model) -> None:
        """Every (instances, concurrency) cell against `server`."""
        for instances in INSTANCES:
            for concurrency in CONCURRENCY:
                cell = self.measure_cell(server, model, instances, concurrency, self.duration)
                self.cells.append(cell)
                flag = (
                    "" if cell.valid else f"  INVALID: {cell.non200} non-200, {cell.errors} errors"
                )
                _progress(
                    f"  {server.name:<10} {instances:>2} inst  c={concurrency:<3} "
                    f"{cell.rps:>9.1f} req/s  p50 {cell.p50_ms:>8.2f} ms  "
                    f"p99 {cell.p99_ms:>8.2f} ms  "
                    f"server CPU {_fmt(cell.server_cpu_ms_per_request, '.3f')} ms/req  "
                    f"other load {_fmt(cell.other_load, '.2f')} CPUs{flag}"
                )

    def measure_cell(
        self, server: Server, model: Model, instances: int, concurrency: int, seconds: float
    ) -> Cell:
        """One warmed-up measurement of `server`; raises if the server exited meanwhile."""
        url = server.url + server.predict_path
        body = model.body(instances)
        if self.warmup > 0:
            self.generator.run(url, body, concurrency, self.warmup)
        pgid = server.process.pid if server.process is not None else None
        before = CpuSample.take(pgid)
        requests, elapsed, p50, p99, non200, errors = self.generator.run(
            url, body, concurrency, seconds
        )
        server_cpu, other_cpu = _cpu_delta(before, CpuSample.take(pgid))
        if server.process is not None and server.process.poll() is not None:
            raise BenchmarkError(
                f"{server.name} exited during the load\n--- {server.log} ---\n"
                f"{_read_tail(server.log)}"
            )
        return Cell(
            server.name,
            instances,
            concurrency,
            requests,
            elapsed,
            p50,
            p99,
            non200,
            errors,
            server_cpu,
            other_cpu,
        )

    def measure_pairs(self, floor: Server, engine: Server, model: Model, rounds: int) -> None:
        """`rounds` back-to-back measurements of the bare floor and mlengine at the target
        concurrency, per request size, the one that goes first alternating.

        On a shared virtual machine the host's speed drifts within a run: the same server
        under the same load was measured at 0.205 to 0.281 ms of CPU per request a few seconds
        apart. Cells measured a minute apart can then differ by a third for no reason of
        their own; pairs measured seconds apart share the host's state, so the floor ratio
        is judged on their median.
        """
        seconds = min(self.duration, PAIRED_SECONDS)
        for instances in INSTANCES:
            ratios: list[float] = []
            rounds_data: list[dict[str, Any]] = []
            for number in range(rounds):
                order = (floor, engine) if number % 2 == 0 else (engine, floor)
                measured = {
                    server.name: self.measure_cell(
                        server, model, instances, TARGET_CONCURRENCY, seconds
                    )
                    for server in order
                }
                bare, mine = measured[floor.name], measured[engine.name]
                ratio = _ratio(mine, bare, "rps")
                rounds_data.append(
                    {"floor_rps": bare.rps, "mlengine_rps": mine.rps, "ratio": ratio}
                )
                if ratio is not None:
                    ratios.append(ratio)
                _progress(
                    f"  pair {number + 1}/{rounds} {instances:>2} inst  c={TARGET_CONCURRENCY}: "
                    f"bare floor {bare.rps:>8.1f}, mlengine {mine.rps:>8.1f} req/s: "
                    f"{_fmt(ratio, '.0%')}"
                )
            self.pairs.append(
                {
                    "instances": instances,
                    "concurrency": TARGET_CONCURRENCY,
                    "seconds": seconds,
                    "rounds": rounds_data,
                    "median_ratio": statistics.median(ratios) if ratios else None,
                }
            )

    def pair(self, instances: int) -> dict[str, Any] | None:
        return next((p for p in self.pairs if p["instances"] == instances), None)

    def cell(self, target: str, instances: int, concurrency: int) -> Cell | None:
        for cell in self.cells:
            if (cell.target, cell.instances, cell.concurrency) == (
                target,
                instances,
                concurrency,
            ):
                return cell
        return None


def bare_server(run: Run) -> Server:
    directory = run.root / "bare"
    directory.mkdir()
    (directory / "bare_app.py").write_text(BARE_APP)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLENGINE_")}
    return Server(
        "bare floor",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            run.log_level,
            "--no-access-log",  # as `mlengine server run` by default: a line per request
            # costs a bare endpoint two thirds of its CPU (~0.1 ms of ~0.15)
        ],
        port=port,
        predict_path="/predict",
        health_path="/",
        log=run.root / "logs" / "bare.log",
        env=env,
        cwd=directory,
        placement=run.placement,
    )


def mlengine_server(run: Run) -> tuple[Server, dict[str, str]]:
    home = run.root / "mlengine-home"
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLENGINE_")}
    env.update(MLENGINE_HOME=str(home), MLENGINE_API_URL=api_url)
    server = Server(
        "mlengine",
        [
            sys.executable,
            "-m",
            "mlengine",
            "server",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            run.log_level,
        ],
        port=port,
        predict_path=f"/v1/projects/default/models/{MODEL_NAME}:predict",
        health_path="/healthz",
        log=run.root / "logs" / "mlengine.log",
        env=env,
        cwd=run.root,
        placement=run.placement,
    )
    return server, env


def create_mlengine_version(env: Mapping[str, str], model: Model) -> dict[str, Any]:
    """``models create`` + ``versions create`` through the SDK; returns the READY version."""
    from mlengine import Client
    from mlengine.config import Settings

    client = Client(settings=Settings.load(environ=dict(env)), autostart=False)
    try:
        if client.project != "default":
            raise BenchmarkError(f"unexpected default project {client.project!r}")
        client.models.create(MODEL_NAME)
        return client.versions.create(
            MODEL_NAME, "v1", model.joblib_dir, framework="scikit-learn", timeout=VERSION_TIMEOUT_S
        )
    finally:
        with contextlib.suppress(Exception):
            client.close()


def mlflow_server(run: Run, venv: Path, model_dir: Path) -> Server:
    port = _free_port()
    env = _mlflow_env(venv)
    env["UVICORN_LOG_LEVEL"] = run.log_level  # mlflow runs the uvicorn CLI, which reads it
    return Server(
        "MLflow",
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ],
        port=port,
        predict_path="/invocations",
        health_path="/ping",
        log=run.root / "logs" / "mlflow.log",
        env=env,
        cwd=run.root,
        placement=run.placement,
    )


def _stack(python: str) -> dict[str, str]:
    script = (
        "import json, uvicorn, importlib.util as u; print(json.dumps({"
        "'uvicorn': uvicorn.__version__, 'uvloop': bool(u.find_spec('uvloop')), "
        "'httptools': bool(u.find_spec('httptools'))}))"
    )
    result = _run([python, "-c", script], timeout=60, what="uvicorn version")
    return {k: str(v) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def benchmark(run: Run, use_mlflow: bool, in_process_seconds: float) -> dict[str, Any]:
    """Measure everything; return the results as plain data."""
    import sklearn

    import mlengine

    _progress("fitting the model (RandomForestClassifier, 100 trees, iris)")
    model = build_model(run.root)
    _progress(f"in-process model.predict, {in_process_seconds:.0f} s per row count")
    with _pinned(run.placement.server):
        floor = in_process_floor(model, in_process_seconds)
    for entry in floor:
        _progress(f"  {entry['rows']:>2} rows: {entry['ms_per_call']:.2f} ms per call")

    stacks: dict[str, Any] = {"this environment": _stack(sys.executable)}
    mlflow_setup: tuple[Path, Path] | None = None
    if use_mlflow:
        try:
            python = ensure_mlflow_venv(MLFLOW_VENV)
            stacks["MLflow venv"] = mlflow_info(python, MLFLOW_VENV)
            _progress("saving the model with mlflow.sklearn.save_model (in the MLflow venv)")
            mlflow_setup = (MLFLOW_VENV, save_mlflow_model(python, MLFLOW_VENV, model, run.root))
        except BenchmarkError as error:
            print(f"WARNING: MLflow is not measured: {error}", file=sys.stderr, flush=True)
            first = str(error).splitlines()[0]
            run.notes.append(
                f"MLflow is not measured: {first} (details on stderr; to retry, fix that or "
                f"delete {MLFLOW_VENV}; --no-mlflow skips this step)"
            )
    else:
        run.notes.append("MLflow not measured (--no-mlflow).")

    bare = bare_server(run)
    engine, engine_env = mlengine_server(run)

    def prepare_mlengine(server: Server) -> None:
        version = create_mlengine_version(engine_env, model)
        if version.get("state") != "READY":
            raise BenchmarkError(f"the mlengine version is {version.get('state')}: {version}")

    # the bare floor and mlengine run side by side (each idle while the other is loaded), so
    # that the paired rounds can measure them seconds apart
    try:
        for server, prepare in ((bare, None), (engine, prepare_mlengine)):
            _progress(f"starting {server.name} at {server.url}")
            server.start()
            if prepare is not None:
                prepare(server)
            check_answers(server, model)
        for server in (bare, engine):
            _progress(f"measuring {server.name} ({run.duration:g} s per cell)")
            run.measure(server, model)
        if run.paired_rounds > 0:
            _progress(
                f"pairing the bare floor and mlengine at c={TARGET_CONCURRENCY}: "
                f"{run.paired_rounds} rounds back to back"
            )
            run.measure_pairs(bare, engine, model, run.paired_rounds)
    finally:
        engine.stop()
        bare.stop()

    if mlflow_setup is not None:
        server = mlflow_server(run, *mlflow_setup)
        _progress(f"starting {server.name} at {server.url}")
        try:
            server.start()
            check_answers(server, model)
            _progress(f"measuring {server.name} ({run.duration:g} s per cell)")
            run.measure(server, model)
        except BenchmarkError as error:
            # MLflow is the comparison, not the subject: report what was measured without it.
            print(f"WARNING: MLflow is not measured: {error}", file=sys.stderr, flush=True)
            run.cells = [cell for cell in run.cells if cell.target != "MLflow"]
            run.notes.append(
                f"MLflow is not measured: {str(error).splitlines()[0]} (details on stderr)"
            )
        finally:
            server.stop()

    return results(run, model, floor, stacks, mlengine.__version__, sklearn.__version__)


def results(
    run: Run,
    model: Model,
    floor: list[dict[str, Any]],
    stacks: Mapping[str, Any],
    mlengine_version: str,
    sklearn_version: str,
) -> dict[str, Any]:
    comparisons = []
    for instances in INSTANCES:
        for concurrency in CONCURRENCY:
            engine = run.cell("mlengine", instances, concurrency)
            mlflow = run.cell("MLflow", instances, concurrency)
            bare = run.cell("bare floor", instances, concurrency)
            comparisons.append(
                {
                    "instances": instances,
                    "concurrency": concurrency,
                    "mlengine_over_mlflow_rps": _ratio(engine, mlflow, "rps"),
                    "mlengine_over_mlflow_p99": _ratio(engine, mlflow, "p99_ms"),
                    "mlengine_over_floor_rps": _ratio(engine, bare, "rps"),
                }
            )
    verdicts = []
    for instances in INSTANCES:
        engine = run.cell("mlengine", instances, TARGET_CONCURRENCY)
        mlflow = run.cell("MLflow", instances, TARGET_CONCURRENCY)
        bare = run.cell("bare floor", instances, TARGET_CONCURRENCY)
        rps_ratio = _ratio(engine, mlflow, "rps")
        pair = run.pair(instances)
        floor_ratio = pair["median_ratio"] if pair is not None else _ratio(engine, bare, "rps")
        verdicts.append(
            {
                "target": f">= {MLFLOW_RATIO_TARGET:g}x MLflow's requests/s",
                "instances": instances,
                "value": rps_ratio,
                "verdict": _verdict(rps_ratio, lambda r: r >= MLFLOW_RATIO_TARGET),
            }
        )
        p99 = _ratio(engine, mlflow, "p99_ms")
        verdicts.append(
            {
                "target": "p99 lower than MLflow's",
                "instances": instances,
                "value": p99,
                "verdict": _verdict(p99, lambda r: r < 1.0),
            }
        )
        verdicts.append(
            {
                "target": f">= {FLOOR_FRACTION_TARGET:.0%} of the bare floor's requests/s"
                + (f" (median of {len(pair['rounds'])} pairs)" if pair is not None else ""),
                "instances": instances,
                "value": floor_ratio,
                "verdict": _verdict(floor_ratio, lambda r: r >= FLOOR_FRACTION_TARGET),
            }
        )
    return {
        "mlengine": mlengine_version,
        "scikit_learn": sklearn_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "placement": run.placement.describe(),
        "load_generator": run.generator.name,
        "duration_s": run.duration,
        "warmup_s": run.warmup,
        "server_log_level": run.log_level,
        "stacks": dict(stacks),
        "model": f"RandomForestClassifier(n_estimators={TREES}) on iris",
        "in_process": floor,
        "cells": [cell.to_json() for cell in run.cells],
        "pairs": run.pairs,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "notes": run.notes,
    }


def _ratio(a: Cell | None, b: Cell | None, what: str) -> float | None:
    if a is None or b is None or not a.valid or not b.valid:
        return None
    denominator = getattr(b, what)
    return getattr(a, what) / denominator if denominator else None


def _verdict(value: float | None, ok: Callable[[float], bool]) -> str:
    if value is None:
        return "N/A"
    return "PASS" if ok(value) else "MISS"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def report(data: Mapping[str, Any]) -> str:
    """The results as human-readable tables."""
    lines = [
        f"mlengine {data['mlengine']} online prediction: {data['model']}, scikit-learn "
        f"{data['scikit_learn']}, Python {data['python']}, {data['cpus']} CPUs, "
        f"{data['platform']}",
        f"load generator: {data['load_generator']}; {data['duration_s']:g} s per cell after "
        f"{data['warmup_s']:g} s of warm-up; closed loop, one request in flight per connection",
        f"placement: {data['placement']}; servers at uvicorn --log-level "
        f"{data['server_log_level']}",
    ]
    for name, stack in data["stacks"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in stack.items()))
    lines += ["", "in process, one thread (model.predict on numpy, mlengine's predictor on lists):"]
    lines.append(f"  {'what':<20}{'rows':>5}{'calls/s':>10}{'ms/call':>10}{'rows/s':>11}")
    for entry in data["in_process"]:
        lines.append(
            f"  {entry.get('what', 'model.predict'):<20}{entry['rows']:>5}"
            f"{entry['calls_per_s']:>10.1f}{entry['ms_per_call']:>10.3f}"
            f"{entry['rows_per_s']:>11.0f}"
        )
    cells = {(c["target"], c["instances"], c["concurrency"]): c for c in data["cells"]}
    comparisons = {(c["instances"], c["concurrency"]): c for c in data["comparisons"]}
    for instances in INSTANCES:
        lines += [
            "",
            f"{instances} instance{'s' if instances > 1 else ''} per request",
            f"  {'conc':>4}  {'target':<11}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
            f"{'non-200':>9}{'errors':>8}{'server CPU':>12}{'other':>8}",
            f"  {'':>4}  {'':<11}{'':>10}{'':>10}{'':>10}{'':>9}{'':>8}{'ms/req':>12}{'CPUs':>8}",
        ]
        for concurrency in CONCURRENCY:
            for target in ("bare floor", "mlengine", "MLflow"):
                cell = cells.get((target, instances, concurrency))
                if cell is None:
                    lines.append(f"  {concurrency:>4}  {target:<11}{'not measured':>20}")
                    continue
                mark = "" if cell["valid"] else "  INVALID"
                lines.append(
                    f"  {concurrency:>4}  {target:<11}{cell['requests_per_s']:>10.1f}"
                    f"{cell['p50_ms']:>10.2f}{cell['p99_ms']:>10.2f}{cell['non200']:>9}"
                    f"{cell['errors']:>8}"
                    f"{_fmt(cell['server_cpu_ms_per_request'], '.3f'):>12}"
                    f"{_fmt(cell['other_load_cpus'], '.2f'):>8}{mark}"
                )
            comparison = comparisons[(instances, concurrency)]
            lines.append(
                f"  {'':>4}  mlengine/MLflow: req/s "
                f"{_fmt(comparison['mlengine_over_mlflow_rps'], '.2f', 'x')}, p99 "
                f"{_fmt(comparison['mlengine_over_mlflow_p99'], '.2f', 'x')}; "
                f"mlengine/bare floor: req/s "
                f"{_fmt(comparison['mlengine_over_floor_rps'], '.0%')}"
            )
        mlengine_cell = cells.get(("mlengine", instances, TARGET_CONCURRENCY))
        floor_cell = cells.get(("bare floor", instances, TARGET_CONCURRENCY))
        for parsing, name in ((False, "model-bound"), (True, "parse-and-model-bound")):
            ceiling = model_bound_ceiling(data, instances, parsing=parsing)
            if ceiling is not None and mlengine_cell is not None and floor_cell is not None:
                lines.append(
                    f"  {name} ceiling at c={TARGET_CONCURRENCY}: {ceiling:.0f} req/s "
                    f"({ceiling / floor_cell['requests_per_s']:.0%} of the bare floor); "
                    f"mlengine reached {mlengine_cell['requests_per_s'] / ceiling:.0%} of it"
                )
        pair = next((p for p in data["pairs"] if p["instances"] == instances), None)
        if pair is not None:
            shown = " ".join(_fmt(r["ratio"], ".0%") for r in pair["rounds"])
            lines.append(
                f"  paired with the bare floor at c={pair['concurrency']} "
                f"({len(pair['rounds'])} rounds of {pair['seconds']:g} s, back to back): "
                f"mlengine/bare floor {shown}; median {_fmt(pair['median_ratio'], '.0%')}"
            )
    lines += [
        "",
        "server CPU: CPU time of the server's processes (all threads) per request; other: CPUs' "
        "worth of work done meanwhile by processes that are neither the server nor the load "
        "generator.",
    ]
    busiest = max((c["other_load_cpus"] or 0.0 for c in data["cells"]), default=0.0)
    if busiest > BUSY_MACHINE_CPUS:
        lines.append(
            f"NOTE: the machine was not idle: other processes used up to {busiest:.2f} CPUs "
            "during a cell; requests/s and latencies are pessimistic where they did, and server "
            "CPU per request is the steadier figure."
        )
    for note in data["notes"]:
        lines.append(f"NOTE: {note}")
    for verdict in data["verdicts"]:
        value = verdict["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        if value is not None and "floor" in verdict["target"]:
            shown = f"{value:.0%}"
        elif value is not None:
            shown = f"{value:.2f}x"
        lines.append(
            f"{verdict['verdict']:<5} c={TARGET_CONCURRENCY}, {verdict['instances']:>2} "
            f"instance(s): mlengine {verdict['target']} (got {shown})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per cell (default 10; --quick 3)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of load before each cell, not counted (default 1; --quick 0.5)",
    )
    parser.add_argument("--quick", action="store_true", help="3 s cells, shorter warm-ups")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when installed, else the asyncio client",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="skip MLflow (no venv, no pip)")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the servers to CPU 0 and the load generator to the other CPUs",
    )
    parser.add_argument(
        "--server-log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn log level of every server (default info: each one's default)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help=f"back-to-back rounds of the bare floor and mlengine at c={TARGET_CONCURRENCY} "
        f"that the floor target is judged on (default {PAIRED_ROUNDS}; --quick 3; 0: judge "
        "on the single cells)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args(argv)
    duration = (
        options.duration if options.duration is not None else (3.0 if options.quick else 10.0)
    )
    warmup = options.warmup if options.warmup is not None else (0.5 if options.quick else 1.0)
    pairs = options.pairs if options.pairs is not None else (3 if options.quick else PAIRED_ROUNDS)
    if duration <= 0 or warmup < 0 or pairs < 0:
        parser.error("--duration must be > 0, --warmup >= 0 and --pairs >= 0")
    from mlengine.errors import MLEngineError

    placement = Placement.choose(not options.no_pin)
    with scratch_directory("mlengine-bench-serving-", options.keep) as root:
        try:
            generator = choose_generator(options.load_generator, root, placement)
            if isinstance(generator, AsyncClient) and options.load_generator == "auto":
                _progress(
                    "wrk is not installed (apt-get install wrk): using the asyncio client, "
                    "which caps the bare floor's numbers at what one Python process can send"
                )
            run = Run(root, duration, warmup, placement, generator, options.server_log_level, pairs)
            _progress(f"{generator.name}; {placement.describe()}; temporary directory {root}")
            data = benchmark(run, not options.no_mlflow, 1.0 if options.quick else 2.0)
        except (BenchmarkError, MLEngineError) as error:
            return fail(error)
    print_results(data, options.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

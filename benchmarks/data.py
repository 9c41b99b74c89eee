"""Black Friday VIP preprocessing: the warehouse SQL path and the Beam path, against plain DuckDB
and pandas.

The job (examples/blackfriday/): from ``samples.blackfriday`` (one row per purchase), one row
per user with the user's attributes (``MIN`` per column), ``purchases``, ``total_purchase``,
``is_vip`` (total above the exact 90th percentile of all users' totals) and ``split`` (80/20 on
``ABS(MOD(FARM_FINGERPRINT(CAST(User_ID AS STRING)), 10)) < 8``).

Per input size (550,068 rows, the tutorial's table, and 5,000,000; ``--sizes`` to choose,
``--quick`` for 550,068 only), not timed: ``samples.blackfriday`` is generated into a temporary
warehouse file (``mlengine.data.samples.load_sample``, seed 0) and the same rows are exported to
one Parquet file. Then every path below runs as its own subprocess, so that its wall time and
peak RSS are its own (``os.wait4``: the largest resident set of the process or of any process it
waited for; for ``--workers 2`` the sum over the process group is also sampled from /proc every
0.25 s). Linux counts a child's memory from before its ``exec`` too, so this process imports
nothing heavy (~16 MB, the floor of every RSS figure): generating the data, comparing the
results and reading the versions run in helper subprocesses, not timed.

* ``mlengine sql (CLI)``: ``mlengine sql - --destination features.vip_cli --replace <
  examples/blackfriday/vip.sql`` with a temporary ``MLENGINE_HOME`` and
  ``MLENGINE_WAREHOUSE_PATH``: the user's command, CLI start-up included (the run also times
  ``mlengine sql "SELECT 1"`` on its own, the start-up floor).
* ``mlengine.data.sql (API)``: a Python process that imports ``mlengine.data`` and calls
  ``mlengine.data.sql(vip.sql, path=WAREHOUSE, destination="features.vip_api", replace=True)``;
  it reports the call's own time (``in-proc``) besides the process's.
* ``DuckDB (warehouse)``, the like-for-like baseline: plain ``duckdb.connect(WAREHOUSE)``, a
  vectorised Arrow UDF ``farm_fingerprint`` (pyfarmhash's ``fingerprint64`` as signed INT64,
  BigQuery's FARM_FINGERPRINT) and ``CREATE OR REPLACE TABLE features.vip_duckdb AS`` the same
  query in DuckDB's dialect (``quantile_cont(...) OVER ()``, ``%``, ``CASE``), then ``close()``.
  Same input table, same kind of output, no mlengine: what the SQL path adds is the difference.
  ``in-proc`` is connect + register + query + close.
* ``DuckDB (Parquet)``: the same SQL on an in-memory connection over the Parquet file, ``COPY``
  to a Parquet file: plain DuckDB on the files pandas reads.
* ``pandas``: ``pyarrow.parquet.read_table`` with the four string columns read as dictionaries
  (categoricals, reordered so that ``min`` is the string MIN), ``groupby("User_ID").agg(...)``
  (MIN, size, sum), ``np.percentile(totals, 90, method="linear")`` (checked against DuckDB's
  ``quantile_cont`` bit for bit), pyfarmhash over the distinct ``User_ID`` strings with
  BigQuery's MOD (``np.fmod`` then ``abs``), ``to_parquet``. ``pandas (default dtypes)``: the
  same with a plain ``pd.read_parquet`` (string columns as pandas strings), shown for reference.
* ``Beam``: ``mlengine preprocess examples/blackfriday/pipeline.py -- --input FILE.parquet
  --output DIR --format parquet`` (DirectRunner, one process: the default; the pipeline reads
  Arrow record batches and groups them with ``mlengine.beam.AggregatePerKey``), the same with
  ``--workers 2``, and with ``--per_row`` (the classic form: one element per purchase and a
  per-row ``CombinePerKey``, shown for reference). The real pipeline, run once per size.

The fast paths run ``--repeat`` times (default 5) round-robin; the report gives the median wall
time (ratios and verdicts use it) and the minimum. Each run's ``other CPUs`` is the machine's
load from other processes meanwhile (from /proc/stat), as in serving.py. After the runs, every
path's result (the tables exported from the warehouse, the Parquet outputs, Beam's train/eval
shards) is sorted by ``User_ID`` and compared column for column: any difference, in the labels,
the split or any other column, is an error.

Targets (informational: the exit code is 0 whether they are met or not, 1 on an error, a failed
path or results that differ): the SQL path within 1.2x of plain DuckDB (warehouse) at each size,
judged on the CLI's wall time against the DuckDB process's, and on the API call's in-process time
against DuckDB's; the Beam path (1 process, and --workers 2) no slower than 3x pandas at
5,000,000 rows (Beam's pure-Python runner is the anchor to beat, not to match).

Usage: ``python benchmarks/data.py [--quick] [--sizes N,N] [--repeat N] [--json] [--keep]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _main import fail, print_results, scratch_directory
from _main import progress as _progress
from _proc import group_rss_bytes, machine_busy_s

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "blackfriday"
VIP_SQL = EXAMPLE / "vip.sql"
PIPELINE = EXAMPLE / "pipeline.py"

FULL_SIZES = (550_068, 5_000_000)
QUICK_SIZES = (550_068,)
SEED = 0
SQL_TARGET = 1.2
BEAM_TARGET = 3.0
BEAM_TARGET_ROWS = 5_000_000
BUSY_MACHINE_CPUS = 0.25
"""Other processes using more than this many CPUs during a run make the report say so."""

FAST_TIMEOUT_S = 300.0
BEAM_TIMEOUT_S = 900.0
GROUP_SAMPLE_S = 0.25
RESULT_MARK = "BENCH-RESULT "

USER_COLUMNS = (
    "Gender",
    "Age",
    "Occupation",
    "City_Category",
    "Stay_In_Current_City_Years",
    "Marital_Status",
)
STRING_COLUMNS = ("Gender", "Age", "City_Category", "Stay_In_Current_City_Years")
INPUT_COLUMNS = ("User_ID", *USER_COLUMNS, "Purchase")
RESULT_TYPES = (
    ("User_ID", "int64"),
    ("Gender", "string"),
    ("Age", "string"),
    ("Occupation", "int64"),
    ("City_Category", "string"),
    ("Stay_In_Current_City_Years", "string"),
    ("Marital_Status", "int64"),
    ("purchases", "int64"),
    ("total_purchase", "int64"),
    ("is_vip", "bool"),
    ("split", "string"),
)

PLAIN_SQL = """\
WITH users AS (
  SELECT
    User_ID,
    min(Gender) AS Gender,
    min(Age) AS Age,
    min(Occupation) AS Occupation,
    min(City_Category) AS City_Category,
    min(Stay_In_Current_City_Years) AS Stay_In_Current_City_Years,
    min(Marital_Status) AS Marital_Status,
    count(*) AS purchases,
    CAST(sum(Purchase) AS BIGINT) AS total_purchase
  FROM {source}
  GROUP BY User_ID
)
SELECT
  *,
  total_purchase > quantile_cont(total_purchase, 0.9) OVER () AS is_vip,
  CASE WHEN abs(farm_fingerprint(CAST(User_ID AS VARCHAR)) % 10) < 8
    THEN 'train' ELSE 'eval' END AS split
FROM users
ORDER BY User_ID"""
"""vip.sql in DuckDB's own dialect, for the plain-DuckDB baselines (FARM_FINGERPRINT is a UDF)."""


@dataclass(frozen=True)
class PathSpec:
    key: str
    label: str
    repeated: bool  # the fast paths run --repeat times; Beam once
    in_process: bool  # the child reports its own timing


PATHS = (
    PathSpec("cli", "mlengine sql (CLI)", True, False),
    PathSpec("api", "mlengine.data.sql (API)", True, True),
    PathSpec("duckdb", "DuckDB (warehouse)", True, True),
    PathSpec("duckdb_parquet", "DuckDB (Parquet)", True, True),
    PathSpec("pandas", "pandas", True, True),
    PathSpec("pandas_default", "pandas (default dtypes)", True, True),
    PathSpec("beam", "Beam, 1 process", False, False),
    PathSpec("beam_workers", "Beam, --workers 2", False, False),
    PathSpec("beam_per_row", "Beam, --per_row", False, False),
)
PATH_LABELS = {spec.key: spec.label for spec in PATHS}


class BenchmarkError(Exception):
    """Something the benchmark needs failed; the message says what and shows its output."""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# -- the paths' own code, run as `python benchmarks/data.py --child KIND ...` -----------------


def _child_api(warehouse: str, destination: str) -> dict[str, Any]:
    query = VIP_SQL.read_text()
    start = time.perf_counter()
    import mlengine.data

    imported = time.perf_counter()
    result = mlengine.data.sql(query, path=warehouse, destination=destination, replace=True)
    done = time.perf_counter()
    return {"import_s": imported - start, "work_s": done - imported, "rows": result.total_rows}


def _fingerprint_udf() -> Any:
    """FARM_FINGERPRINT for plain DuckDB: a vectorised Arrow UDF over pyfarmhash."""
    import farmhash
    import numpy as np
    import pyarrow as pa

    def farm_fingerprint(values: Any) -> Any:
        strings = values.to_pylist()
        hashes = np.fromiter(
            (farmhash.fingerprint64(value) for value in strings),
            dtype=np.uint64,
            count=len(strings),
        )
        return pa.array(hashes.view(np.int64), type=pa.int64())

    return farm_fingerprint


def _child_duckdb(warehouse: str, destination: str) -> dict[str, Any]:
    query = PLAIN_SQL.format(source="samples.blackfriday")
    dataset = destination.split(".")[0]
    start = time.perf_counter()
    import duckdb

    udf = _fingerprint_udf()
    imported = time.perf_counter()
    connection = duckdb.connect(warehouse)
    connection.create_function(
        "farm_fingerprint", udf, [duckdb.sqltypes.VARCHAR], duckdb.sqltypes.BIGINT, type="arrow"
    )
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {dataset}")
    connection.execute(f"CREATE OR REPLACE TABLE {destination} AS {query}")
    connection.close()
    done = time.perf_counter()
    return {"import_s": imported - start, "work_s": done - imported}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _child_duckdb_parquet(parquet: str, output: str) -> dict[str, Any]:
    query = PLAIN_SQL.format(source=f"read_parquet({_sql_string(parquet)})")
    start = time.perf_counter()
    import duckdb

    udf = _fingerprint_udf()
    imported = time.perf_counter()
    connection = duckdb.connect()
    connection.create_function(
        "farm_fingerprint", udf, [duckdb.sqltypes.VARCHAR], duckdb.sqltypes.BIGINT, type="arrow"
    )
    connection.execute(f"COPY ({query}) TO {_sql_string(output)} (FORMAT parquet)")
    connection.close()
    done = time.perf_counter()
    return {"import_s": imported - start, "work_s": done - imported}


def _child_pandas(parquet: str, output: str, categorical: bool) -> dict[str, Any]:
    start = time.perf_counter()
    import farmhash
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    imported = time.perf_counter()
    if categorical:
        frame = pq.read_table(
            parquet, columns=list(INPUT_COLUMNS), read_dictionary=list(STRING_COLUMNS)
        ).to_pandas()
        for column in STRING_COLUMNS:  # ordered by value: min() is then the string MIN
            categories = frame[column].cat
            frame[column] = categories.reorder_categories(
                sorted(categories.categories), ordered=True
            )
    else:
        frame = pd.read_parquet(parquet, columns=list(INPUT_COLUMNS))
    users = frame.groupby("User_ID", sort=True).agg(
        **{column: (column, "min") for column in USER_COLUMNS},
        purchases=("Purchase", "size"),
        total_purchase=("Purchase", "sum"),
    )
    threshold = float(
        np.percentile(users["total_purchase"].to_numpy(dtype=np.float64), 90, method="linear")
    )
    users["is_vip"] = users["total_purchase"] > threshold
    ids = users.index.to_numpy().tolist()
    hashes = np.fromiter(
        (farmhash.fingerprint64(str(user_id)) for user_id in ids), dtype=np.uint64, count=len(ids)
    ).view(np.int64)
    users["split"] = np.where(np.abs(np.fmod(hashes, 10)) < 8, "train", "eval")
    users.reset_index().to_parquet(output, index=False)
    done = time.perf_counter()
    return {"import_s": imported - start, "work_s": done - imported, "threshold": threshold}


def child_main(argv: Sequence[str]) -> int:
    kind, *args = argv
    if kind == "api":
        result = _child_api(*args)
    elif kind == "duckdb":
        result = _child_duckdb(*args)
    elif kind == "duckdb_parquet":
        result = _child_duckdb_parquet(*args)
    elif kind in ("pandas", "pandas_default"):
        result = _child_pandas(*args, categorical=kind == "pandas")
    elif kind == "prepare":
        result = _child_prepare(*args)
    elif kind == "check":
        result = _child_check(*args)
    elif kind == "versions":
        result = _child_versions()
    else:
        print(f"unknown child {kind!r}", file=sys.stderr)
        return 2
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


# -- running one path -------------------------------------------------------------------------


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class _GroupSampler(threading.Thread):
    """Samples the summed RSS of a process group until stopped; keeps the peak."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            value = group_rss_bytes(self.pgid)
            if value is not None:
                self.peak = max(self.peak, value)
            self._done.wait(GROUP_SAMPLE_S)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


@dataclass
class Sample:
    """One run of one path."""

    wall_s: float
    rss_mb: float
    cpu_s: float
    other_cpus: float | None
    work_s: float | None = None
    import_s: float | None = None
    group_rss_mb: float | None = None
    extra: dict[str, Any] | None = None


def run_measured(
    command: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str],
    log_dir: Path,
    timeout: float,
    stdin: Path | None = None,
    sample_group: bool = False,
) -> Sample:
    """Run `command` in its own process group; its wall time, peak RSS and CPU.

    Raises:
        BenchmarkError: it could not start, timed out or exited non-zero.
    """
    slug = "".join(c if c.isalnum() else "-" for c in what)
    out_path, err_path = log_dir / f"{slug}.out", log_dir / f"{slug}.err"
    timed_out = threading.Event()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(out_path.open("w"))
        err = stack.enter_context(err_path.open("w"))
        source = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        busy_before, own_before = machine_busy_s(), _own_cpu_s()
        started = time.perf_counter()
        try:
            process = subprocess.Popen(
                list(command),
                stdin=source,
                stdout=out,
                stderr=err,
                env=dict(env),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        except OSError as error:
            raise BenchmarkError(f"{what} could not start: {error}") from error
        sampler = _GroupSampler(process.pid) if sample_group else None
        if sampler is not None:
            sampler.start()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        busy_after, own_after = machine_busy_s(), _own_cpu_s()
        process.returncode = os.waitstatus_to_exitcode(status)
        group_peak = sampler.stop() if sampler is not None else None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # anything of its group left behind
    stdout = out_path.read_text(errors="replace")
    if timed_out.is_set():
        raise BenchmarkError(f"{what} took longer than {timeout:.0f} s: {list(command)}")
    if process.returncode != 0:
        output = _tail(err_path.read_text(errors="replace")) or _tail(stdout)
        raise BenchmarkError(
            f"{what} failed (exit status {process.returncode}): {list(command)}\n{output}"
        )
    cpu = usage.ru_utime + usage.ru_stime
    other = None
    if busy_before is not None and busy_after is not None and wall > 0:
        other = max(0.0, (busy_after - busy_before) - cpu - (own_after - own_before)) / wall
    sample = Sample(
        wall_s=wall,
        rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        cpu_s=cpu,
        other_cpus=other,
        group_rss_mb=None if group_peak is None else group_peak / 2**20,
    )
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            reported = json.loads(line[len(RESULT_MARK) :])
            sample.work_s = reported.pop("work_s", None)
            sample.import_s = reported.pop("import_s", None)
            sample.extra = reported
            break
    return sample


# -- one input size ---------------------------------------------------------------------------


def _child_env(home: Path, warehouse: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLENGINE_")}
    env.update(
        MLENGINE_HOME=str(home),
        MLENGINE_WAREHOUSE_PATH=str(warehouse),
        PYTHONUNBUFFERED="1",
    )
    return env


def _this_command() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child"]


def helper(root: Path, kind: str, *args: str, timeout: float = FAST_TIMEOUT_S) -> dict[str, Any]:
    """Run a helper child (setup, checks, versions: not timed) and return what it reported.

    The heavy imports happen there, not here: a child forked from a process holding hundreds of
    MB would report that as its own peak RSS (Linux counts the memory before exec).
    """
    what = f"the {kind} step"
    try:
        result = subprocess.run(
            [*_this_command(), kind, *args],
            cwd=REPO_ROOT,
            env=_child_env(root / "home", root / "helper.duckdb"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"{what} took longer than {timeout:.0f} s") from error
    if result.returncode != 0:
        output = _tail(result.stderr) or _tail(result.stdout)
        raise BenchmarkError(f"{what} failed (exit status {result.returncode}):\n{output}")
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            reported: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return reported
    raise BenchmarkError(f"{what} reported nothing:\n{_tail(result.stdout)}")


def _mlengine_command() -> list[str]:
    script = Path(sys.executable).parent / "mlengine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlengine"]


@dataclass
class SizeRun:
    """The files of one input size, all under `directory`."""

    rows: int
    directory: Path

    @property
    def warehouse(self) -> Path:
        return self.directory / "warehouse.duckdb"

    @property
    def parquet(self) -> Path:
        return self.directory / "blackfriday.parquet"

    def output(self, name: str) -> Path:
        return self.directory / "out" / name

    def env(self) -> dict[str, str]:
        return _child_env(self.directory.parent / "home", self.warehouse)


def _child_prepare(rows: str, directory: str) -> dict[str, Any]:
    """Generate samples.blackfriday into a fresh warehouse and export it to Parquet."""
    from mlengine.data import connect
    from mlengine.data.samples import load_sample

    run = SizeRun(int(rows), Path(directory))
    (run.directory / "out").mkdir(parents=True)
    (run.directory / "logs").mkdir()
    started = time.perf_counter()
    with connect(run.warehouse) as connection:
        load_sample(connection, "blackfriday", rows=run.rows, seed=SEED)
        connection.execute(
            f"COPY samples.blackfriday TO {_sql_string(str(run.parquet))} (FORMAT parquet)"
        )
        users = connection.sql("SELECT count(DISTINCT User_ID) FROM samples.blackfriday")
        (user_count,) = users.fetchall()[0]
    return {
        "users": int(user_count),
        "setup_s": time.perf_counter() - started,
        "parquet_mb": run.parquet.stat().st_size / 2**20,
    }


def _child_check(rows: str, directory: str, pandas_threshold: str) -> dict[str, Any]:
    """Every path's result compared with the CLI's; numpy's percentile against DuckDB's."""
    run = SizeRun(int(rows), Path(directory))
    threshold = None if pandas_threshold == "none" else float.fromhex(pandas_threshold)
    return {
        "comparison": compare_results(read_results(run)),
        "percentile": percentile_check(run, threshold),
    }


def _child_versions() -> dict[str, Any]:
    import apache_beam
    import duckdb
    import pandas
    import pyarrow

    import mlengine

    return {
        "mlengine": mlengine.__version__,
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "apache_beam": apache_beam.__version__,
    }


def path_command(key: str, run: SizeRun) -> tuple[list[str], Path | None]:
    """The command of one path, and the file for its stdin."""
    this = _this_command()
    mlengine = _mlengine_command()
    beam_args = [
        str(PIPELINE),
        "--",
        "--input",
        str(run.parquet),
        "--output",
        str(run.output(key)),
        "--format",
        "parquet",
    ]
    commands: dict[str, tuple[list[str], Path | None]] = {
        "cli": ([*mlengine, "sql", "-", "--destination", "features.vip_cli", "--replace"], VIP_SQL),
        "api": ([*this, "api", str(run.warehouse), "features.vip_api"], None),
        "duckdb": ([*this, "duckdb", str(run.warehouse), "features.vip_duckdb"], None),
        "duckdb_parquet": (
            [*this, "duckdb_parquet", str(run.parquet), str(run.output("duckdb.parquet"))],
            None,
        ),
        "pandas": ([*this, "pandas", str(run.parquet), str(run.output("pandas.parquet"))], None),
        "pandas_default": (
            [*this, "pandas_default", str(run.parquet), str(run.output("pandas_default.parquet"))],
            None,
        ),
        "beam": ([*mlengine, "preprocess", *beam_args], None),
        "beam_workers": ([*mlengine, "preprocess", "--workers", "2", *beam_args], None),
        "beam_per_row": ([*mlengine, "preprocess", *beam_args, "--per_row"], None),
    }
    return commands[key]


def measure_size(run: SizeRun, repeat: int) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {spec.key: [] for spec in PATHS}
    logs = run.directory / "logs"
    for round_ in range(repeat):
        for spec in PATHS:
            if not spec.repeated:
                continue
            command, stdin = path_command(spec.key, run)
            sample = run_measured(
                command,
                what=f"{spec.label} {run.rows} rows run {round_ + 1}",
                env=run.env(),
                log_dir=logs,
                timeout=FAST_TIMEOUT_S,
                stdin=stdin,
            )
            samples[spec.key].append(sample)
        _progress(
            f"  round {round_ + 1}/{repeat}: "
            + ", ".join(
                f"{spec.key} {samples[spec.key][-1].wall_s:.2f} s"
                for spec in PATHS
                if spec.repeated
            )
        )
    for spec in PATHS:
        if spec.repeated:
            continue
        _progress(f"  {spec.label} ({run.rows:,} rows)")
        command, stdin = path_command(spec.key, run)
        sample = run_measured(
            command,
            what=f"{spec.label} {run.rows} rows",
            env=run.env(),
            log_dir=logs,
            timeout=BEAM_TIMEOUT_S,
            stdin=stdin,
            sample_group=spec.key == "beam_workers",
        )
        samples[spec.key].append(sample)
        _progress(f"    {sample.wall_s:.1f} s, peak RSS {sample.rss_mb:.0f} MB")
    return samples


def _result_schema() -> Any:
    import pyarrow as pa

    types = {"int64": pa.int64(), "string": pa.string(), "bool": pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in RESULT_TYPES])


def _canonical(table: Any, what: str) -> Any:
    import pyarrow as pa

    schema = _result_schema()
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise BenchmarkError(f"the result of {what} lacks the columns {missing}")
    columns = []
    for field in schema:
        column = table.column(field.name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema).sort_by("User_ID").combine_chunks()


def read_results(run: SizeRun) -> dict[str, Any]:
    """Every path's result as one canonical Arrow table (sorted by User_ID)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables: dict[str, Any] = {}
    connection = duckdb.connect(str(run.warehouse), read_only=True)
    try:
        for key, table in (
            ("cli", "features.vip_cli"),
            ("api", "features.vip_api"),
            ("duckdb", "features.vip_duckdb"),
        ):
            tables[key] = connection.sql(f"SELECT * FROM {table}").to_arrow_table()
    finally:
        connection.close()
    for key in ("duckdb_parquet", "pandas", "pandas_default"):
        tables[key] = pq.read_table(run.output(f"{key.replace('_parquet', '')}.parquet"))
    for key in ("beam", "beam_workers"):
        parts = []
        for split in ("train", "eval"):
            for shard in sorted(run.output(key).glob(f"{split}-*.parquet")):
                part = pq.read_table(shard)
                parts.append(part.append_column("split", pa.array([split] * part.num_rows)))
        if not parts:
            raise BenchmarkError(f"{PATH_LABELS[key]} wrote no shard under {run.output(key)}")
        tables[key] = pa.concat_tables(parts, promote_options="permissive")
    return {key: _canonical(table, PATH_LABELS[key]) for key, table in tables.items()}


def compare_results(tables: Mapping[str, Any]) -> dict[str, Any]:
    """Which columns differ from the CLI's result, path by path (empty: identical)."""
    reference = tables["cli"]
    differences: dict[str, list[str]] = {}
    for key, table in tables.items():
        if table.num_rows != reference.num_rows:
            differences[key] = [f"{table.num_rows} rows instead of {reference.num_rows}"]
            continue
        differing = [
            name
            for name in reference.column_names
            if not table.column(name).equals(reference.column(name))
        ]
        if differing:
            differences[key] = differing
    users = reference.num_rows
    vips = sum(reference.column("is_vip").to_pylist())
    train = sum(1 for split in reference.column("split").to_pylist() if split == "train")
    return {"users": users, "vip": vips, "train": train, "differences": differences}


def percentile_check(run: SizeRun, pandas_threshold: float | None) -> dict[str, Any]:
    """pandas' np.percentile against DuckDB's quantile_cont on the same totals."""
    import duckdb

    output = _sql_string(str(run.output("pandas.parquet")))
    connection = duckdb.connect()
    try:
        rows = connection.sql(
            f"SELECT quantile_cont(total_purchase, 0.9) FROM read_parquet({output})"
        ).fetchall()
    finally:
        connection.close()
    duckdb_value = float(rows[0][0])
    return {
        "duckdb_quantile_cont": duckdb_value,
        "numpy_percentile": pandas_threshold,
        "bit_identical": pandas_threshold is not None
        and pandas_threshold.hex() == duckdb_value.hex(),
    }


# -- the whole run ----------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    group = [s.group_rss_mb for s in samples if s.group_rss_mb is not None]
    others = [s.other_cpus for s in samples if s.other_cpus is not None]
    return {
        "runs": len(samples),
        "wall_s": _median([s.wall_s for s in samples]),
        "wall_min_s": min(s.wall_s for s in samples),
        "in_process_s": _median([s.work_s for s in samples]),
        "import_s": _median([s.import_s for s in samples]),
        "peak_rss_mb": max(s.rss_mb for s in samples),
        "group_rss_mb": max(group) if group else None,
        "cpu_s": _median([s.cpu_s for s in samples]),
        "other_cpus": max(others) if others else None,
        "samples": [asdict(s) for s in samples],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "N/A"
    return "PASS" if value <= limit else "MISS"


def benchmark(root: Path, sizes: Sequence[int], repeat: int) -> dict[str, Any]:
    versions = helper(root, "versions")
    env = _child_env(root / "home", root / "startup.duckdb")
    logs = root / "logs"
    logs.mkdir()
    _progress(f'timing start-up: mlengine sql "SELECT 1" x{repeat}, import apache_beam')
    cli_startup = [
        run_measured(
            [*_mlengine_command(), "sql", "SELECT 1"],
            what=f"mlengine sql SELECT 1 run {index + 1}",
            env=env,
            log_dir=logs,
            timeout=FAST_TIMEOUT_S,
        )
        for index in range(repeat)
    ]
    beam_import = run_measured(
        [sys.executable, "-c", "import apache_beam, mlengine.beam"],
        what="import apache_beam",
        env=env,
        log_dir=logs,
        timeout=FAST_TIMEOUT_S,
    )
    results = []
    for rows in sizes:
        _progress(f"{rows:,} rows: generating samples.blackfriday and its Parquet copy")
        run = SizeRun(rows, root / f"rows-{rows}")
        setup = helper(root, "prepare", str(rows), str(run.directory))
        _progress(
            f"  {setup['users']:,} users, Parquet {setup['parquet_mb']:.1f} MB, setup "
            f"{setup['setup_s']:.1f} s (not timed); fast paths x{repeat}, then Beam"
        )
        samples = measure_size(run, repeat)
        threshold = (samples["pandas"][-1].extra or {}).get("threshold")
        _progress("  comparing the results")
        checked = helper(
            root,
            "check",
            str(rows),
            str(run.directory),
            "none" if threshold is None else float(threshold).hex(),
        )
        paths = {key: summarize(values) for key, values in samples.items()}
        results.append(
            {
                "rows": rows,
                **setup,
                "paths": paths,
                **checked,
                "ratios": ratios(paths),
            }
        )
    return {
        **versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "repeat": repeat,
        "cli_startup": summarize(cli_startup),
        "beam_import": summarize([beam_import]),
        "sizes": results,
        "verdicts": verdicts(results),
    }


def ratios(paths: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    def wall(key: str) -> float | None:
        return paths[key]["wall_s"]

    def work(key: str) -> float | None:
        return paths[key]["in_process_s"]

    return {
        "cli_over_duckdb_wall": _ratio(wall("cli"), wall("duckdb")),
        "api_over_duckdb_wall": _ratio(wall("api"), wall("duckdb")),
        "api_over_duckdb_in_process": _ratio(work("api"), work("duckdb")),
        "duckdb_over_duckdb_parquet_wall": _ratio(wall("duckdb"), wall("duckdb_parquet")),
        "beam_over_pandas": _ratio(wall("beam"), wall("pandas")),
        "beam_workers_over_pandas": _ratio(wall("beam_workers"), wall("pandas")),
        **{f"{key}_over_pandas": _ratio(wall(key), wall("pandas")) for key in paths},
    }


def verdicts(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for size in results:
        rows, r = size["rows"], size["ratios"]
        found.append(
            {
                "target": f"mlengine sql (CLI) within {SQL_TARGET:g}x of plain DuckDB (wall)",
                "rows": rows,
                "value": r["cli_over_duckdb_wall"],
                "verdict": _verdict(r["cli_over_duckdb_wall"], SQL_TARGET),
            }
        )
        found.append(
            {
                "target": f"mlengine.data.sql (API) within {SQL_TARGET:g}x of plain DuckDB "
                "(in-process)",
                "rows": rows,
                "value": r["api_over_duckdb_in_process"],
                "verdict": _verdict(r["api_over_duckdb_in_process"], SQL_TARGET),
            }
        )
    at_target = [size for size in results if size["rows"] == BEAM_TARGET_ROWS]
    for key, label in (("beam", "1 process"), ("beam_workers", "--workers 2")):
        value = at_target[0]["ratios"][f"{key}_over_pandas"] if at_target else None
        found.append(
            {
                "target": f"Beam ({label}) no slower than {BEAM_TARGET:g}x pandas",
                "rows": BEAM_TARGET_ROWS,
                "value": value,
                "verdict": _verdict(value, BEAM_TARGET),
            }
        )
    identical = all(not size["comparison"]["differences"] for size in results)
    found.append(
        {
            "target": "labels, splits and every other column identical across all paths",
            "rows": None,
            "value": None,
            "verdict": "PASS" if identical else "FAIL",
        }
    )
    return found


# -- the report -------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def report(data: Mapping[str, Any]) -> str:
    startup = data["cli_startup"]
    lines = [
        f"mlengine {data['mlengine']} Black Friday VIP preprocessing; DuckDB {data['duckdb']}, "
        f"pandas {data['pandas']}, pyarrow {data['pyarrow']}, apache-beam "
        f"{data['apache_beam']}, Python {data['python']}, {data['cpus']} CPUs, "
        f"{data['platform']}",
        f"wall: whole subprocess, median of {data['repeat']} interleaved runs (Beam: 1 run); "
        "in-proc: the work alone, after imports (reported by the process); RSS: peak of the "
        "largest process",
        f'start-up: mlengine sql "SELECT 1" {startup["wall_s"]:.2f} s wall (median); '
        f"python -c 'import apache_beam, mlengine.beam' {data['beam_import']['wall_s']:.2f} s",
    ]
    header = (
        f"  {'path':<26}{'wall s':>8}{'min s':>8}{'in-proc s':>10}{'RSS MB':>8}"
        f"{'other CPUs':>11}{'/ pandas':>10}"
    )
    for size in data["sizes"]:
        paths, r, comparison = size["paths"], size["ratios"], size["comparison"]
        lines += [
            "",
            f"{size['rows']:,} rows ({size['users']:,} users; Parquet {size['parquet_mb']:.1f} "
            f"MB; generated in {size['setup_s']:.1f} s, not timed)",
            header,
        ]
        for spec in PATHS:
            entry = paths[spec.key]
            lines.append(
                f"  {spec.label:<26}{entry['wall_s']:>8.2f}{entry['wall_min_s']:>8.2f}"
                f"{_fmt(entry['in_process_s'], '.2f'):>10}{entry['peak_rss_mb']:>8.0f}"
                f"{_fmt(entry['other_cpus'], '.2f'):>11}"
                f"{_fmt(r[f'{spec.key}_over_pandas'], '.2f', 'x'):>10}"
            )
        group = paths["beam_workers"]["group_rss_mb"]
        if group is not None:
            lines.append(
                f"  Beam --workers 2, RSS summed over its processes (sampled every "
                f"{GROUP_SAMPLE_S:g} s): {group:.0f} MB"
            )
        fastest = paths["duckdb"]["wall_min_s"]
        cli_min = _ratio(paths["cli"]["wall_min_s"], fastest)
        api_min = _ratio(paths["api"]["wall_min_s"], fastest)
        lines += [
            f"  SQL path / plain DuckDB (warehouse): CLI wall "
            f"{_fmt(r['cli_over_duckdb_wall'], '.2f', 'x')}, API wall "
            f"{_fmt(r['api_over_duckdb_wall'], '.2f', 'x')}, API in-process "
            f"{_fmt(r['api_over_duckdb_in_process'], '.2f', 'x')}; DuckDB warehouse / DuckDB "
            f"Parquet wall {_fmt(r['duckdb_over_duckdb_parquet_wall'], '.2f', 'x')}",
            f"  mlengine sql (CLI) less its start-up floor ({startup['wall_s']:.2f} s): "
            f"{paths['cli']['wall_s'] - startup['wall_s']:.2f} s, against DuckDB's whole process "
            f"{paths['duckdb']['wall_s']:.2f} s; fastest runs: CLI / DuckDB "
            f"{_fmt(cli_min, '.2f', 'x')}, API / DuckDB {_fmt(api_min, '.2f', 'x')}",
            f"  Beam / pandas: 1 process {_fmt(r['beam_over_pandas'], '.1f', 'x')}, --workers 2 "
            f"{_fmt(r['beam_workers_over_pandas'], '.1f', 'x')}",
        ]
        percentile = size["percentile"]
        lines.append(
            f"  90th percentile: DuckDB quantile_cont {percentile['duckdb_quantile_cont']!r}, "
            f"numpy {percentile['numpy_percentile']!r} (bit for bit: "
            f"{'yes' if percentile['bit_identical'] else 'no: the labels decide, below'})"
        )
        if comparison["differences"]:
            for key, columns in comparison["differences"].items():
                lines.append(
                    f"  DIFFERENT: {PATH_LABELS[key]} vs the CLI's table: {', '.join(columns)}"
                )
        else:
            lines.append(
                f"  labels identical: yes ({len(paths)} paths, {comparison['users']:,} users, "
                f"{comparison['vip']:,} VIP, {comparison['train']:,} train; every column equal)"
            )
    busiest = max(
        (entry["other_cpus"] or 0.0 for size in data["sizes"] for entry in size["paths"].values()),
        default=0.0,
    )
    lines += [
        "",
        "other CPUs: CPUs' worth of work done during a run by processes other than the path's "
        "own (the machine's load; the worst of the runs).",
    ]
    if busiest > BUSY_MACHINE_CPUS:
        lines.append(
            f"NOTE: the machine was not idle: other processes used up to {busiest:.2f} CPUs "
            "during a run; wall times are pessimistic where they did."
        )
    for verdict in data["verdicts"]:
        value = verdict["value"]
        if verdict["rows"] is None:
            lines.append(f"{verdict['verdict']:<5} {verdict['target']}")
            continue
        shown = "not measured" if value is None else f"got {value:.2f}x"
        lines.append(
            f"{verdict['verdict']:<5} {verdict['rows']:>9,} rows: {verdict['target']} ({shown})"
        )
    return "\n".join(lines)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a list of row counts: {text!r}") from error
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"row counts must be >= 1: {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--child"]:
        return child_main(arguments[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="comma-separated input row counts (default 550068,5000000)",
    )
    parser.add_argument("--quick", action="store_true", help="550,068 rows only")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each fast path (default 5; median reported)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args(arguments)
    if options.repeat < 1:
        parser.error("--repeat must be >= 1")
    sizes = options.sizes or (QUICK_SIZES if options.quick else FULL_SIZES)
    with scratch_directory("mlengine-bench-data-", options.keep) as root:
        _progress(f"temporary directory {root}")
        try:
            data = benchmark(root, sizes, options.repeat)
        except BenchmarkError as error:
            return fail(error)
    print_results(data, options.json, report)
    identical = all(not size["comparison"]["differences"] for size in data["sizes"])
    if not identical:
        print("ERROR: the paths' results differ (see DIFFERENT above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

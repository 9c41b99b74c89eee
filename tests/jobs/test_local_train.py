from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from mlengine.errors import InvalidArgument
from mlengine.jobs import _local_train
from mlengine.jobs._local_train import run_local_train

pytestmark = pytest.mark.integration

# Per replica behaviour from args: `--exit-<type> N`, `--sleep-<type>`, `--die-<type>` (SIGTERM
# itself), `--interrupt-exit N` (exit N on Ctrl-C).
TRAINER = textwrap.dedent(
    """\
    import json, os, signal, sys, time

    args = sys.argv[1:]
    if "--interrupt-exit" in args:
        code = int(args[args.index("--interrupt-exit") + 1])
        signal.signal(signal.SIGINT, lambda *_: sys.exit(code))
    job_dir = args[args.index("--job-dir") + 1]
    tf_config = json.loads(os.environ["TF_CONFIG"])
    task = tf_config["task"]
    kind = {"chief": "master"}.get(task.get("type"), task.get("type", "master"))
    name = f"{kind}-replica-{task.get('index', 0)}"
    keys = ["CLOUD_ML_JOB_ID", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
            "AIP_MODEL_DIR"]
    record = {"argv": args, "cwd": os.getcwd(), "tf_config": tf_config, "pid": os.getpid(),
              "env": {k: os.environ.get(k) for k in keys}}
    with open(os.path.join(job_dir, name + ".tmp"), "w") as f:
        json.dump(record, f)
    os.replace(os.path.join(job_dir, name + ".tmp"), os.path.join(job_dir, name + ".json"))
    print("out of", name)
    print("err of", name, file=sys.stderr)
    sys.stdout.write("no newline")
    sys.stdout.flush()
    if f"--die-{kind}" in args:
        os.kill(os.getpid(), signal.SIGTERM)
    if "--interrupt-exit" in args:
        time.sleep(1000)
    if f"--sleep-{kind}" in args:
        time.sleep(1000)
    if f"--wait-{kind}" in args:  # until every other replica has written its record
        expected = int(args[args.index(f"--wait-{kind}") + 1])
        while len([n for n in os.listdir(job_dir) if n.endswith(".json")]) < expected:
            time.sleep(0.01)
    flag = f"--exit-{kind}"
    sys.exit(int(args[args.index(flag) + 1]) if flag in args else 0)
    """
)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "trainer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(TRAINER)
    return package


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path


def record(job_dir: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((job_dir / f"{name}.json").read_text())
    return result


def test_single_process(package: Path, job_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = run_local_train(
        "trainer.task", package, str(job_dir), ["--a", "1", "--exit-master", "4"]
    )
    assert code == 4
    result = record(job_dir, "master-replica-0")
    assert result["argv"] == ["--a", "1", "--exit-master", "4", "--job-dir", str(job_dir)]
    assert result["cwd"] == str(package.parent)
    assert result["tf_config"] == {
        "job": {"job_name": "trainer.task", "args": result["argv"]},
        "task": {},
        "cluster": {},
        "environment": "cloud",
    }
    assert result["env"] == {
        "CLOUD_ML_JOB_ID": "local_trainer_task",
        "MASTER_ADDR": "localhost",
        "MASTER_PORT": "27182",
        "WORLD_SIZE": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "AIP_MODEL_DIR": f"{job_dir}/model/",
    }
    out, err = capfd.readouterr()  # the child wrote straight to our file descriptors
    assert out == "out of master-replica-0\nno newline"
    assert err == "err of master-replica-0\n"


def test_default_package_path_is_the_current_directory(
    package: Path, job_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(package.parent)
    assert run_local_train("trainer.task", None, str(job_dir), []) == 0
    assert record(job_dir, "master-replica-0")["cwd"] == str(package.parent)


def test_counts_without_distributed_are_ignored_with_a_warning(
    package: Path, job_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = run_local_train(
        "trainer.task", package, str(job_dir), [], worker_count=3, parameter_server_count=1
    )
    assert code == 0
    assert list(job_dir.glob("*.json")) == [job_dir / "master-replica-0.json"]
    err = capfd.readouterr().err
    assert "WARNING: --worker-count is ignored if --distributed is not provided." in err
    assert "WARNING: --parameter-server-count is ignored" in err


def test_signal_gives_128_plus_n(package: Path, job_dir: Path) -> None:
    assert run_local_train("trainer.task", package, str(job_dir), ["--die-master"]) == 143


def test_distributed(package: Path, job_dir: Path) -> None:
    out = io.StringIO()
    args = ["--exit-master", "3", "--wait-master", "5", "--sleep-worker", "--sleep-ps"]
    started = time.monotonic()
    code = run_local_train(
        "trainer.task",
        package,
        str(job_dir),
        args,
        distributed=True,
        worker_count=2,
        parameter_server_count=1,
        evaluator_count=1,
        start_port=31000,
        out=out,
    )
    assert code == 3
    assert time.monotonic() - started < 10
    names = [
        "master-replica-0", "ps-replica-0", "worker-replica-0", "worker-replica-1",
        "evaluator-replica-0",
    ]  # fmt: skip
    records = {name: record(job_dir, name) for name in names}
    cluster = {
        "chief": ["localhost:31000"],
        "ps": ["localhost:31001"],
        "worker": ["localhost:31002", "localhost:31003"],
    }
    for name, result in records.items():
        task_type, _, index = name.split("-")
        assert result["tf_config"] == {
            "job": {"job_name": "trainer.task", "args": [*args, "--job-dir", str(job_dir)]},
            "task": {"type": "chief" if task_type == "master" else task_type, "index": int(index)},
            "cluster": cluster,
            "environment": "cloud",
        }
        assert result["cwd"] == str(package.parent)
        assert result["env"]["MASTER_PORT"] == "31000"
        assert result["env"]["WORLD_SIZE"] == "3"
    assert [records[n]["env"]["RANK"] for n in names] == ["0", None, "1", "2", None]

    lines = out.getvalue().splitlines()
    for name in names:
        assert f"{name}: out of {name}" in lines
        assert f"{name}: err of {name}" in lines
        assert f"{name}: no newline" in lines
    for name in names:  # the others were terminated when the primary exited
        pid = records[name]["pid"]
        assert not os.path.exists(f"/proc/{pid}"), name


def test_ctrl_c_reaches_the_trainer(package: Path, job_dir: Path) -> None:
    script = (
        "import sys; from pathlib import Path; "
        "from mlengine.jobs._local_train import run_local_train; "
        f"sys.exit(run_local_train('trainer.task', Path({str(package)!r}), {str(job_dir)!r}, "
        "['--interrupt-exit', '7']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not (job_dir / "master-replica-0.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert process.wait(timeout=30) == 7
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize(
    ("module", "package_name", "message"),
    [
        ("trainer.task", "missing", "does not exist"),
        ("trainer.nothere", "trainer", "Cannot find module 'trainer.nothere'"),
        ("trainer", "trainer", "Cannot find module 'trainer'"),
        ("trainer.task-1", "trainer", "not a valid Python module name"),
    ],
)
def test_bad_package_or_module_starts_nothing(
    package: Path,
    module: str,
    package_name: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr(_local_train.subprocess, "Popen", no_process)
    with pytest.raises(InvalidArgument, match=message):
        run_local_train(module, package.parent / package_name, None, [], distributed=True)


def test_package_with_main_module(tmp_path: Path, job_dir: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__main__.py").write_text(
        "import sys, pathlib\n"
        "pathlib.Path(sys.argv[-1], 'ran').write_text(' '.join(sys.argv[1:]))\n"
    )
    assert run_local_train("pkg", package, str(job_dir), ["x"]) == 0
    assert (job_dir / "ran").read_text() == f"x --job-dir {job_dir}"

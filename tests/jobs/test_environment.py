from __future__ import annotations

import io
import json
import site
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest

from mlengine.errors import InvalidArgument, OperationFailed
from mlengine.jobs import _environment
from mlengine.jobs._environment import TrainerEnvironments
from mlengine.jobs._packaging import build_package

PROBE = textwrap.dedent(
    """\
    import json, sys, numpy, jobpkg
    print(json.dumps({
        "prefix": sys.prefix,
        "path": sys.path,
        "jobpkg": jobpkg.__file__,
        "numpy": numpy.__file__,
        "answer": jobpkg.ANSWER,
    }))
    """
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip must find everything it needs without an index."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def make_sdist(
    tmp_path: Path,
    name: str = "jobpkg",
    requires: tuple[str, ...] = ("numpy",),
    init: str = "ANSWER = 42\n",
) -> Path:
    project = tmp_path / f"src-{name}"
    package = project / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    (package / "cli.py").write_text("def main() -> None:\n    print('hello from the script')\n")
    (project / "setup.py").write_text(
        textwrap.dedent(
            f"""\
            from setuptools import setup

            setup(
                name={name!r},
                version="0.1",
                packages=[{name!r}],
                install_requires={list(requires)!r},
                entry_points={{"console_scripts": ["{name}-hello={name}.cli:main"]}},
            )
            """
        )
    )
    return build_package(package, tmp_path / "dist")


def broken_sdist(tmp_path: Path) -> Path:
    """An sdist whose setup.py fails when pip builds it."""
    path = tmp_path / "broken-0.1.tar.gz"
    files = {
        "broken-0.1/setup.py": "raise SystemExit('boom: this package cannot be built')\n",
        "broken-0.1/PKG-INFO": "Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def leftovers(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.integration
def test_installs_job_package_and_reuses_server_packages(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path)
    envs = TrainerEnvironments(tmp_path / "envs")
    lines: list[str] = []

    python = envs.ensure([sdist], log=lines.append)

    env = tmp_path / "envs" / envs.key([sdist])
    assert python == env / "bin" / "python"
    # Built in a temporary directory and renamed: it works from its final place.
    assert leftovers(tmp_path / "envs") == [env.name]
    assert "Checking that jobpkg can be imported" in lines
    assert any("Requirement already satisfied: numpy" in line for line in lines)
    probe = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    seen = json.loads(probe.stdout)
    assert Path(seen["prefix"]) == env
    assert seen["answer"] == 42
    assert Path(seen["jobpkg"]).is_relative_to(env)
    server_site = [Path(d) for d in site.getsitepackages()]
    assert any(Path(seen["numpy"]).is_relative_to(d) for d in server_site)
    assert not list(env.glob("lib/python*/site-packages/numpy*"))
    # The job's own site-packages comes before the server's directories.
    path = [Path(p) for p in seen["path"]]
    job_site = next(i for i, p in enumerate(path) if p.is_relative_to(env))
    assert all(job_site < path.index(d) for d in server_site if d in path)
    # Console scripts point at the environment's final path, not the temporary one.
    script = subprocess.run(
        [str(env / "bin" / "jobpkg-hello")], capture_output=True, text=True, check=True
    )
    assert script.stdout == "hello from the script\n"


@pytest.mark.integration
def test_second_ensure_is_a_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdist = make_sdist(tmp_path)
    first = TrainerEnvironments(tmp_path / "envs").ensure([sdist])
    marker = first.parent.parent / "COMPLETE"
    built_at = marker.stat().st_mtime_ns

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached environment must not run pip again")

    monkeypatch.setattr(_environment, "_run", no_subprocess)
    lines: list[str] = []
    second = TrainerEnvironments(tmp_path / "envs").ensure([sdist], log=lines.append)

    assert second == first
    assert marker.stat().st_mtime_ns == built_at
    assert lines == [f"Using the cached Python environment {first.parent.parent}"]


@pytest.mark.integration
def test_concurrent_ensures_of_one_key_build_once(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path)
    lines: list[str] = []
    results: list[Path] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def job() -> None:
        start.wait()
        try:
            results.append(TrainerEnvironments(tmp_path / "envs").ensure([sdist], lines.append))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 2
    assert results[0] == results[1]
    assert sum(line.startswith("Creating a Python environment") for line in lines) == 1
    assert any("built by another job" in line for line in lines)


@pytest.mark.integration
def test_package_that_fails_to_build_raises_and_leaves_nothing(tmp_path: Path) -> None:
    envs = TrainerEnvironments(tmp_path / "envs")
    with pytest.raises(OperationFailed) as info:
        envs.ensure([broken_sdist(tmp_path)])
    message = str(info.value)
    assert message.startswith("Installing the packages failed (exit status 1): ")
    assert "boom: this package cannot be built" in message
    assert leftovers(tmp_path / "envs") == []


@pytest.mark.integration
def test_missing_requirement_fails_offline_with_pips_message(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, requires=("mlengine-no-such-distribution-xyz",))
    with pytest.raises(OperationFailed, match="mlengine-no-such-distribution-xyz"):
        TrainerEnvironments(tmp_path / "envs").ensure([sdist])
    assert leftovers(tmp_path / "envs") == []


@pytest.mark.integration
def test_package_that_cannot_be_imported_fails(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, init="raise ImportError('jobpkg needs a missing library')\n")
    with pytest.raises(OperationFailed) as info:
        TrainerEnvironments(tmp_path / "envs").ensure([sdist])
    first = str(info.value).splitlines()[0]
    assert first.startswith("Importing jobpkg from the packages' environment failed")
    assert "jobpkg needs a missing library" in first  # the exception, on the line shown
    assert "jobpkg needs a missing library" in str(info.value)
    assert leftovers(tmp_path / "envs") == []


def test_no_packages_run_with_the_server_interpreter(tmp_path: Path) -> None:
    assert TrainerEnvironments(tmp_path / "envs").ensure([]) == Path(sys.executable)


def test_unsupported_package_file_is_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "trainer.tar.bz2"
    bad.write_bytes(b"x")
    with pytest.raises(InvalidArgument, match=r"trainer\.tar\.bz2"):
        TrainerEnvironments(tmp_path / "envs").ensure([bad])


def test_key_follows_package_contents(tmp_path: Path) -> None:
    envs = TrainerEnvironments(tmp_path / "envs")
    package = tmp_path / "jobpkg-0.1.tar.gz"
    package.write_bytes(b"one")
    first = envs.key([package])
    assert envs.key([package]) == first
    package.write_bytes(b"two")
    assert envs.key([package]) != first

from __future__ import annotations

import os
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from mlengine.errors import InvalidArgument, OperationFailed
from mlengine.jobs._packaging import build_package, package_digest, validate_package_files


def write_trainer(project: Path, name: str = "trainer") -> Path:
    package = project / name
    (package / "sub").mkdir(parents=True)
    (package / "assets").mkdir()
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text("def main() -> None:\n    print('training')\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "model.py").write_text("LAYERS = 3\n")
    (package / "assets" / "config.yaml").write_text("epochs: 2\n")
    return package


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


def members(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}


def pkg_info(sdist: Path) -> str:
    with tarfile.open(sdist) as tar:
        info = next(m for m in tar.getmembers() if m.name.count("/") == 1 and "PKG-INFO" in m.name)
        f = tar.extractfile(info)
        assert f is not None
        return f.read().decode()


def test_generated_setup_py_builds_package_and_leaves_tree_untouched(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = write_trainer(project)
    before = snapshot(project)

    sdist = build_package(package, tmp_path / "dist")

    assert sdist == tmp_path / "dist" / "trainer-0.0.0.tar.gz"
    assert sdist.is_file()
    assert {
        "trainer/__init__.py",
        "trainer/task.py",
        "trainer/sub/__init__.py",
        "trainer/sub/model.py",
        "trainer/assets/config.yaml",
        "setup.py",
        "PKG-INFO",
    } <= members(sdist)
    assert not any("__pycache__" in m for m in members(sdist))
    assert "Name: trainer\n" in pkg_info(sdist)
    assert snapshot(project) == before


def test_own_setup_py_is_used_and_keeps_install_requires(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = write_trainer(project)
    (project / "setup.py").write_text(
        textwrap.dedent(
            """\
            from setuptools import find_packages, setup

            setup(
                name="iris-trainer",
                version="1.2.3",
                packages=find_packages(),
                install_requires=["numpy>=1.20", "scikit-learn"],
            )
            """
        )
    )
    before = snapshot(project)

    sdist = build_package(package, tmp_path / "dist")

    assert sdist.name == "iris_trainer-1.2.3.tar.gz"
    info = pkg_info(sdist)
    assert "Requires-Dist: numpy>=1.20" in info
    assert "Requires-Dist: scikit-learn" in info
    assert {"trainer/task.py", "trainer/sub/model.py", "setup.py"} <= members(sdist)
    assert snapshot(project) == before  # no egg-info or build/ left behind


def test_pyproject_only_project_is_built_through_its_backend(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = write_trainer(project)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "pp-trainer"
            version = "0.4"
            dependencies = ["numpy"]

            [tool.setuptools]
            packages = ["trainer", "trainer.sub"]
            """
        )
    )
    before = snapshot(project)

    sdist = build_package(package, tmp_path / "dist")

    assert sdist.name == "pp_trainer-0.4.tar.gz"
    assert "Requires-Dist: numpy" in pkg_info(sdist)
    assert snapshot(project) == before


def test_missing_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        build_package(tmp_path / "nope", tmp_path / "dist")


def test_file_instead_of_directory_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "trainer.py").write_text("")
    with pytest.raises(InvalidArgument, match="not a directory"):
        build_package(tmp_path / "trainer.py", tmp_path / "dist")


def test_directory_without_init_is_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "task.py").write_text("")
    with pytest.raises(InvalidArgument, match=r"no __init__\.py"):
        build_package(tmp_path / "trainer", tmp_path / "dist")


def test_package_name_must_be_an_identifier(tmp_path: Path) -> None:
    package = write_trainer(tmp_path, name="my-trainer")
    with pytest.raises(InvalidArgument, match="Python identifier"):
        build_package(package, tmp_path / "dist")


def test_failing_setup_py_reports_its_error(tmp_path: Path) -> None:
    package = write_trainer(tmp_path / "project")
    (tmp_path / "project" / "setup.py").write_text(
        "raise RuntimeError('the setup script is broken on purpose')\n"
    )
    with pytest.raises(OperationFailed) as info:
        build_package(package, tmp_path / "dist")
    message = str(info.value)
    assert message.splitlines()[0].startswith("Building the package with ")
    assert "the setup script is broken on purpose" in message
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_package_digest_covers_names_contents_and_order(tmp_path: Path) -> None:
    a = tmp_path / "a.tar.gz"
    b = tmp_path / "b.whl"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    digest = package_digest([a, b])

    assert len(digest) == 64
    assert digest == package_digest([a, b])
    assert digest != package_digest([b, a])
    renamed = tmp_path / "c.tar.gz"
    renamed.write_bytes(b"first")
    assert package_digest([renamed, b]) != digest
    a.write_bytes(b"changed")
    assert package_digest([a, b]) != digest
    with pytest.raises(InvalidArgument, match=r"missing\.whl"):
        package_digest([tmp_path / "missing.whl"])


@pytest.mark.parametrize("name", ["t-1.0.tar.gz", "t-1.0.zip", "t-1.0-py3-none-any.whl"])
def test_validate_package_files_accepts_known_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".tar.gz"):
        with tarfile.open(path, "w:gz"):
            pass
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("t/__init__.py", "")
    assert validate_package_files([str(path)]) == [path]
    path.write_bytes(b"x")  # the name, but not the archive, of a package
    with pytest.raises(InvalidArgument, match=f"{name} is not a .*archive"):
        validate_package_files([path])


def test_validate_package_files_rejects_other_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "t-1.0.tar.bz2"
    path.write_bytes(b"x")
    with pytest.raises(InvalidArgument, match=r"t-1\.0\.tar\.bz2"):
        validate_package_files([path])


def test_validate_package_files_rejects_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"absent-1\.0\.tar\.gz does not exist"):
        validate_package_files([tmp_path / "absent-1.0.tar.gz"])


def test_builds_are_reproducible(tmp_path: Path) -> None:
    """The same sources give the same bytes, so staging and the env cache deduplicate."""
    package = tmp_path / "src" / "trainer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text("print('hi')\n")
    first = build_package(package, tmp_path / "one").read_bytes()
    os.utime(package / "task.py", (1_000_000_000, 1_000_000_000))
    second = build_package(package, tmp_path / "two").read_bytes()
    assert first == second
    (package / "task.py").write_text("print('changed')\n")
    assert build_package(package, tmp_path / "three").read_bytes() != first

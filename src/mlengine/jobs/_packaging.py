"""Turning a trainer into the packages a training job installs, as gcloud does.

``--package-path DIR`` is built into an sdist with the current interpreter, offline and without
build isolation (gcloud runs ``python setup.py sdist`` in the parent of DIR):

* the parent of DIR has a ``setup.py``: run ``setup.py egg_info --egg-base <tmp> sdist`` there,
  so that only sdist's short-lived release tree touches the user's directory (a copy is built
  when the parent is not writable);
* the parent has only a ``pyproject.toml``: copy it to a temporary directory (caches and
  virtualenvs left out) and call its PEP 517 backend's ``build_sdist`` there, as
  ``python -m build --sdist --no-isolation`` would;
* neither: generate ``setup(name=<pkg>, version="0.0.0", packages=find_packages(...))`` in a
  temporary copy of DIR and build that.

``--packages a.tar.gz,b.whl`` are checked with :func:`validate_package_files`, and a set of
packages is named by :func:`package_digest` (the ``<sha256>/<file>`` staging path of gcloud).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zipfile
from collections.abc import Sequence
from pathlib import Path

from mlengine.errors import InvalidArgument, OperationFailed

__all__ = ["PACKAGE_SUFFIXES", "build_package", "package_digest", "validate_package_files"]

PACKAGE_SUFFIXES = (".tar.gz", ".zip", ".whl")
"""File endings a training job accepts in ``packageUris``."""

_BUILD_TIMEOUT_S = 600.0
_ERROR_TAIL_LINES = 15
_COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__",
    "*.py[co]",
    "*.egg-info",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
)

# Runs a PEP 517 backend's build_sdist in-process (no isolation, no network), like
# `python -m build --sdist --no-isolation`, which may not be installed.
_PEP517_SDIST = textwrap.dedent(
    """\
    import importlib, os, sys, tomllib
    with open("pyproject.toml", "rb") as f:
        system = tomllib.load(f).get("build-system", {})
    sys.path[:0] = [os.path.abspath(p) for p in system.get("backend-path", [])]
    name = system.get("build-backend", "setuptools.build_meta:__legacy__")
    module, _, attrs = name.partition(":")
    backend = importlib.import_module(module)
    for attr in filter(None, attrs.split(".")):
        backend = getattr(backend, attr)
    print(backend.build_sdist(sys.argv[1], {}))
    """
)


def build_package(package_path: Path, dist_dir: Path) -> Path:
    """Build the sdist of a trainer package directory, as ``gcloud --package-path`` does.

    Args:
        package_path: The trainer package directory (it holds ``__init__.py``), e.g.
            ``examples/iris/trainer``.
        dist_dir: Where the built ``.tar.gz`` is put (created if missing; a file of the same
            name there is replaced).

    Returns:
        The path of the built ``.tar.gz`` inside ``dist_dir``.

    Raises:
        InvalidArgument: ``package_path`` is missing, is not a directory, is not a Python
            package (no ``__init__.py``) or its name is not a Python identifier.
        OperationFailed: The build ran and failed (the message ends with the last lines of its
            output) or produced no ``.tar.gz``.
    """
    package_path = Path(package_path).absolute()
    if not package_path.exists():
        raise InvalidArgument(f"The package path {package_path} does not exist.")
    if not package_path.is_dir():
        raise InvalidArgument(f"The package path {package_path} is not a directory.")
    if not (package_path / "__init__.py").is_file():
        raise InvalidArgument(
            f"The package path {package_path} is not a Python package: it has no __init__.py."
        )
    dist_dir = Path(dist_dir).absolute()
    dist_dir.mkdir(parents=True, exist_ok=True)
    project = package_path.parent
    with tempfile.TemporaryDirectory(prefix="mlengine-sdist-") as scratch_name:
        scratch = Path(scratch_name)
        out = scratch / "dist"
        out.mkdir()
        if (project / "setup.py").is_file():
            if not os.access(project, os.W_OK):
                project = _copy_tree(project, scratch / "src" / project.name)
            _build_with_setup_py(project, out, scratch)
        elif (project / "pyproject.toml").is_file():
            # setuptools' backend writes egg-info next to the sources: build a copy.
            copy = _copy_tree(project, scratch / "src" / project.name)
            what = str(project / "pyproject.toml")
            _run_build([sys.executable, "-c", _PEP517_SDIST, str(out)], cwd=copy, what=what)
        else:
            generated = _generate_project(package_path, scratch / "project")
            _build_with_setup_py(generated, out, scratch)
        built = sorted(out.glob("*.tar.gz"))
        if len(built) != 1:
            found = ", ".join(p.name for p in out.iterdir()) or "nothing"
            raise OperationFailed(
                f"Building {package_path} produced {found} instead of one .tar.gz file."
            )
        target = dist_dir / built[0].name
        _write_reproducible(built[0], target)
    return target


_REPRODUCIBLE_MTIME = 315532800
"""1980-01-01: a fixed time for every archive member (zip-based wheels reject earlier)."""


def _write_reproducible(source: Path, target: Path) -> None:
    """Rewrite an sdist so that the same sources always give the same bytes: members sorted,
    times, owners and the gzip header fixed. The package digest, which names the staged file and
    the cached job environment, then changes only when the sources do."""
    temporary = target.with_name(f".{target.name}.tmp")
    with (
        tarfile.open(source, "r:gz") as archive,
        open(temporary, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            content = archive.extractfile(member) if member.isfile() else None
            member.mtime = _REPRODUCIBLE_MTIME
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            member.pax_headers = {}
            out.addfile(member, content)
    os.replace(temporary, target)


def package_digest(paths: Sequence[Path]) -> str:
    """The SHA-256 of a set of package files: their names and contents, in the given order.

    gcloud stages packages under ``<bucket>/<job>/<digest>/<file>``; the same digest names a
    cached job environment.

    Args:
        paths: The package files, in the order the job lists them.

    Returns:
        The hex digest.

    Raises:
        InvalidArgument: A file does not exist.
    """
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        try:
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError as e:
            raise InvalidArgument(f"The package file {path} does not exist.") from e
    return digest.hexdigest()


def validate_package_files(paths: Sequence[str | Path]) -> list[Path]:
    """Check the files given as ``--packages`` / ``packageUris`` before a job uses them.

    Args:
        paths: Package files.

    Returns:
        The same files as :class:`~pathlib.Path` objects, in order.

    Raises:
        InvalidArgument: A file does not exist, is not a regular file, or does not end in
            ``.tar.gz``, ``.zip`` or ``.whl``.
    """
    checked = []
    for raw in paths:
        path = Path(raw)
        if not path.name.endswith(PACKAGE_SUFFIXES):
            raise InvalidArgument(
                f"The package file {path} must end in .tar.gz, .zip or .whl. Got {path.name!r}."
            )
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise InvalidArgument(f"The package file {path} {what}.")
        if not is_package_archive(path):
            raise InvalidArgument(
                f"The package file {path} is not a {_ARCHIVE_KIND[path.name.endswith('.tar.gz')]}."
            )
        checked.append(path)
    return checked


_ARCHIVE_KIND = {True: "gzip-compressed tar archive (an sdist)", False: "zip archive"}


def is_package_archive(path: Path) -> bool:
    """Whether the package file `path` is the archive its name says: a ``.tar.gz`` a
    gzip-compressed tar file, a ``.zip`` or ``.whl`` a zip file (pip would fail on it later
    with its own traceback)."""
    if path.name.endswith(".tar.gz"):
        try:
            with tarfile.open(path, "r:gz") as archive:
                archive.next()
        except (tarfile.TarError, OSError, EOFError):
            return False
        return True
    return zipfile.is_zipfile(path)


def _build_with_setup_py(project: Path, out: Path, scratch: Path) -> None:
    # As gcloud does, egg-info goes to a scratch directory; only sdist's short-lived release
    # tree (<name>-<version>/) appears, and is removed, in the project directory.
    egg_base = scratch / "egg-info"
    egg_base.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "setup.py",
        "egg_info",
        "--egg-base",
        str(egg_base),
        "sdist",
        "--formats=gztar",
        "--dist-dir",
        str(out),
    ]
    _run_build(command, cwd=project, what=str(project / "setup.py"))


def _run_build(command: list[str], cwd: Path, what: str) -> None:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        raise OperationFailed(
            f"Building the package with {what} took longer than {_BUILD_TIMEOUT_S:.0f} s."
        ) from e
    if result.returncode != 0:
        tail = _tail(result.stderr) or _tail(result.stdout)
        raise OperationFailed(
            f"Building the package with {what} failed (exit status {result.returncode}):\n{tail}"
        )


def _generate_project(package_path: Path, project: Path) -> Path:
    name = package_path.name
    if not name.isidentifier():
        raise InvalidArgument(
            f"The package path {package_path} must name a directory whose name is a Python "
            f"identifier. Got {name!r}."
        )
    _copy_tree(package_path, project / name)
    (project / "setup.py").write_text(
        "from setuptools import find_packages, setup\n\n"
        f"setup(\n    name={name!r},\n    version='0.0.0',\n"
        f"    packages=find_packages(include=[{name!r}, {name + '.*'!r}]),\n"
        "    include_package_data=True,\n)\n"
    )
    # Ship the package's data files too (configs, vocabularies), not only its modules.
    (project / "MANIFEST.in").write_text(f"graft {name}\nglobal-exclude *.py[cod] __pycache__\n")
    return project


def _copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=_COPY_IGNORE)
    return target


def _tail(output: str) -> str:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    return "\n".join(lines[-_ERROR_TAIL_LINES:])

"""Isolated Python environments for training jobs, cached by the packages they install.

A job's packages are installed into a virtual environment of their own, so that two jobs never
see each other's trainers. The environment still sees everything installed next to mlengine
(torch, scikit-learn, mlengine itself...): ``venv --system-site-packages`` would expose the
*base* interpreter's site-packages when the server runs in a virtualenv, so instead a ``.pth``
file calls :func:`site.addsitedir` on each of the server's site-packages directories. pip,
running inside the new environment (``pip --python``), then counts those distributions as
installed: requirements the server already has are never downloaded.

Layout under ``cache_root``::

    <key>/                  a complete environment (it holds COMPLETE)
    <key>.lock              flock'd while <key> is being built
    .<key>.tmp-XXXX/        an environment being built, renamed to <key> when complete

``key`` hashes the packages' names and contents, the Python version and the server's
environment (``sys.prefix`` and its site-packages directories).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import venv
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mlengine.errors import OperationFailed
from mlengine.jobs._packaging import package_digest, validate_package_files

__all__ = ["TrainerEnvironments"]

_MARKER = "COMPLETE"
_PTH_NAME = "_mlengine_server_env.pth"
_KEY_CHARS = 32
_ERROR_TAIL_LINES = 15
_SDIST_NAME = re.compile(r"^(?P<name>.+?)-[^-]*\d[^-]*\.(tar\.gz|zip)$")


class TrainerEnvironments:
    """A cache of per-job Python environments, each with one set of job packages installed.

    Safe to use from several threads and processes at once: an environment is built by one of
    them under an exclusive lock and published by an atomic rename, and a complete environment
    is never modified again.
    """

    def __init__(self, cache_root: Path) -> None:
        self.cache_root = Path(cache_root).absolute()

    def ensure(self, packages: Sequence[Path], log: Callable[[str], None] | None = None) -> Path:
        """Return the interpreter of an environment with ``packages`` installed, building it once.

        Args:
            packages: Package files (``.tar.gz``, ``.zip``, ``.whl``), installed together in the
                given order. With no packages the server's own interpreter is returned.
            log: Called with progress lines (pip's output included) while an environment is
                built, and with one line on a cache hit.

        Returns:
            The ``python`` of the environment (not resolved: run it by this path).

        Raises:
            InvalidArgument: A package file is missing or has an unsupported name.
            OperationFailed: pip failed, or a package's top-level module cannot be imported
                from the new environment; the message ends with the last lines of the output.
        """
        emit = log or _ignore
        files = [p.absolute() for p in validate_package_files(packages)]
        if not files:
            return Path(sys.executable)
        key = self.key(files)
        final = self.cache_root / key
        if (final / _MARKER).is_file():
            emit(f"Using the cached Python environment {final}")
            return _python(final)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache_root / f"{key}.lock"):
            if (final / _MARKER).is_file():
                emit(f"Using the Python environment {final} built by another job")
                return _python(final)
            for stale in self.cache_root.glob(f".{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=self.cache_root))
            try:
                self._build(tmp, final, files, emit)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return _python(final)

    def key(self, packages: Sequence[Path]) -> str:
        """The cache key of an environment with ``packages`` installed in this server.

        Args:
            packages: Package files, in installation order.

        Returns:
            A hex string naming the environment's directory under ``cache_root``.

        Raises:
            InvalidArgument: A package file does not exist.
        """
        identity = "\n".join(
            [package_digest(packages), sys.version, sys.prefix, *_server_site_dirs()]
        )
        return hashlib.sha256(identity.encode()).hexdigest()[:_KEY_CHARS]

    def _build(
        self, tmp: Path, final: Path, packages: list[Path], emit: Callable[[str], None]
    ) -> None:
        emit(f"Creating a Python environment for {', '.join(p.name for p in packages)}")
        venv.EnvBuilder(symlinks=os.name != "nt", with_pip=False).create(tmp)
        purelib = Path(
            sysconfig.get_path("purelib", "venv", vars={"base": str(tmp), "platbase": str(tmp)})
        )
        # addsitedir (not a plain path line) so the server's own .pth files (editable installs)
        # work too; the directories are appended, after the job's site-packages.
        (purelib / _PTH_NAME).write_text(
            "".join(f"import site; site.addsitedir({d!r})\n" for d in _server_site_dirs())
        )
        python = _python(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "--no-input",
                "--no-warn-script-location",
                *map(str, packages),
            ],
            "Installing the packages",
            emit,
        )
        modules = _top_level_modules(purelib, packages)
        if modules:
            emit(f"Checking that {', '.join(modules)} can be imported")
            _run(
                [str(python), "-c", "".join(f"import {m}\n" for m in modules)],
                f"Importing {', '.join(modules)} from the packages' environment",
                emit,
                cwd=tmp,  # not the server's working directory, which may hold a same-named dir
            )
        _relocate(tmp, final)
        tmp.chmod(0o755)  # mkdtemp made it private; trainers may run as another user
        (tmp / _MARKER).write_text(" ".join(p.name for p in packages) + "\n")
        emit(f"Created the Python environment {final}")


def _ignore(line: str) -> None:
    del line


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _server_site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(
    command: list[str], what: str, emit: Callable[[str], None], cwd: Path | None = None
) -> None:
    tail: deque[str] = deque(maxlen=_ERROR_TAIL_LINES)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        cwd=cwd,
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            if line:
                tail.append(line)
                emit(line)
        returncode = process.wait()
    if returncode != 0:  # the last line (an exception, pip's error) first: one-line readers
        output = "\n".join(tail)
        last = f": {tail[-1]}" if tail else ""
        raise OperationFailed(f"{what} failed (exit status {returncode}){last}\n{output}")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution_name(package: Path) -> str | None:
    if package.name.endswith(".whl"):
        return _normalize(package.name.split("-")[0])
    match = _SDIST_NAME.match(package.name)
    return _normalize(match["name"]) if match else None


def _top_level_modules(purelib: Path, packages: list[Path]) -> list[str]:
    """The importable top-level modules the job's own distributions installed into the env."""
    wanted = {name for p in packages if (name := _distribution_name(p))}
    modules: set[str] = set()
    for dist_info in purelib.glob("*.dist-info"):
        if _normalize(dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]) not in wanted:
            continue
        top_level = dist_info / "top_level.txt"
        if top_level.is_file():
            names = top_level.read_text().split()
        else:
            names = [_record_top_level(row) for row in _record_rows(dist_info)]
        modules.update(n for n in names if n and n.isidentifier())
    return sorted(modules)


def _record_rows(dist_info: Path) -> list[str]:
    record = dist_info / "RECORD"
    return record.read_text().splitlines() if record.is_file() else []


def _record_top_level(row: str) -> str:
    path = row.split(",", 1)[0]
    first, _, rest = path.partition("/")
    if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__"):
        return ""
    if not rest:
        return first.removesuffix(".py") if first.endswith(".py") else ""
    return first


def _relocate(tmp: Path, final: Path) -> None:
    """Point the environment's scripts (console-script shebangs, activate) at its final path.

    Modules need nothing: they are found through ``sys.prefix``, which follows the interpreter.
    """
    old, new = str(tmp).encode(), str(final).encode()
    for path in [tmp / "pyvenv.cfg", *_python(tmp).parent.iterdir()]:
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if old in content and b"\0" not in content:
            path.write_bytes(content.replace(old, new))

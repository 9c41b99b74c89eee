"""A real, throwaway PostgreSQL server for tests.

Uses Debian's server binaries (``apt-get install -y postgresql``). As root, the cluster is
created and run by the ``postgres`` OS user (PostgreSQL refuses to run as root); otherwise by
the current user. The server listens on 127.0.0.1 on a free port, trusts every local
connection and runs with ``fsync=off``: it starts in about a second.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["create_database", "find_postgres_bindir", "running_postgres"]

_MISSING = "PostgreSQL server binaries not found; install with: apt-get install -y postgresql"
_START_ATTEMPTS = 3
# A Unix socket path (DIR/.s.PGSQL.PORT) must fit in 107 bytes.
_MAX_DIR_LENGTH = 80


def find_postgres_bindir() -> Path:
    """The ``bin`` directory of the newest PostgreSQL server installed under /usr/lib/postgresql.

    Raises:
        RuntimeError: No ``initdb`` was found.
    """
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not candidates:
        found = shutil.which("initdb")
        if found is None:
            raise RuntimeError(_MISSING)
        return Path(found).parent
    return max(candidates, key=lambda p: _version_key(p.parent.name))


@contextlib.contextmanager
def running_postgres(base_dir: Path) -> Iterator[str]:
    """Run a fresh PostgreSQL server for the duration of the ``with`` block.

    Args:
        base_dir: Where the cluster's directory is created (pytest's ``tmp_path`` will do).
            When the ``postgres`` user cannot reach it, or the path is too long for a Unix
            socket, the system temporary directory is used instead.

    Yields:
        A SQLAlchemy URL: ``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres``.

    Raises:
        RuntimeError: The server binaries are missing, or ``initdb`` / ``pg_ctl start`` failed
            (the message holds their output and the server log).
    """
    bindir = find_postgres_bindir()
    owner = _server_user()
    data_dir = Path(tempfile.mkdtemp(prefix="pg-", dir=_parent_for(Path(base_dir), owner)))
    try:
        if owner is not None:
            os.chown(data_dir, owner.pw_uid, owner.pw_gid)
        _run(
            owner,
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=data_dir,
        )
        port = _start(bindir, owner, data_dir)
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run(
                owner,
                [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"],
                cwd=data_dir,
                check=False,
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create an empty database on the server at ``url`` and return its URL.

    Args:
        url: A SQLAlchemy URL of the server (as yielded by :func:`running_postgres`).
        name: The new database's name.

    Returns:
        ``url`` with its database replaced by ``name``.

    Raises:
        psycopg.Error: The database could not be created (e.g. it exists already).
    """
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database or "postgres",
        autocommit=True,
    ) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return parsed.set(database=name).render_as_string(hide_password=False)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _server_user() -> pwd.struct_passwd | None:
    """The OS user that runs the server: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as e:
        raise RuntimeError(f"Running as root, but there is no 'postgres' user. {_MISSING}") from e


def _parent_for(base_dir: Path, owner: pwd.struct_passwd | None) -> Path:
    base_dir = base_dir.absolute()
    base_dir.mkdir(parents=True, exist_ok=True)
    if len(str(base_dir)) <= _MAX_DIR_LENGTH and (owner is None or _can_traverse(base_dir, owner)):
        return base_dir
    return Path(tempfile.gettempdir())


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may search every directory from / down to ``path``."""
    groups = {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem} | {user.pw_gid}
    for directory in [path, *path.parents]:
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _start(bindir: Path, owner: pwd.struct_passwd | None, data_dir: Path) -> int:
    log = data_dir / "server.log"
    failure = ""
    for _ in range(_START_ATTEMPTS):  # the free port may be taken before the server binds it
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} -c fsync=off"
        command = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", options]
        result = _run(owner, [*command, "-w", "start"], cwd=data_dir, check=False)
        if result.returncode == 0:
            return port
        server_log = log.read_text(errors="replace") if log.exists() else ""
        failure = f"{result.stdout}{result.stderr}\n{server_log}".strip()
    raise RuntimeError(f"PostgreSQL did not start:\n{failure}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(
    owner: pwd.struct_passwd | None, command: list[str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    program = Path(command[0]).name
    if owner is not None:
        command = ["runuser", "-u", owner.pw_name, "--", *command]
    # pg_ctl's server keeps no handle on our pipes: its output goes to the -l log file.
    result = subprocess.run(
        command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{program} failed (exit status {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result

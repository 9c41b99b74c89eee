from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .postgres import create_database, find_postgres_bindir, running_postgres


def test_server_binaries_are_installed() -> None:
    assert (find_postgres_bindir() / "pg_ctl").is_file()


@pytest.mark.integration
@pytest.mark.postgres
def test_running_postgres_serves_sqlalchemy_and_new_databases(tmp_path: Path) -> None:
    with running_postgres(tmp_path) as url:
        parsed = make_url(url)
        assert parsed.drivername == "postgresql+psycopg"
        assert (parsed.username, parsed.host, parsed.database) == (
            "postgres",
            "127.0.0.1",
            "postgres",
        )
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar_one() == 1
        finally:
            engine.dispose()

        other_url = create_database(url, "mlengine_test")
        assert make_url(other_url).database == "mlengine_test"
        other = create_engine(other_url)
        try:
            with other.begin() as connection:
                connection.execute(text("CREATE TABLE t (x int)"))
                connection.execute(text("INSERT INTO t VALUES (7)"))
            with other.connect() as connection:
                assert connection.execute(text("SELECT current_database()")).scalar_one() == (
                    "mlengine_test"
                )
                assert connection.execute(text("SELECT x FROM t")).scalar_one() == 7
        finally:
            other.dispose()
        port = parsed.port
        assert port is not None

    # Stopped and cleaned up: the port no longer answers, no cluster directory is left.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not list(tmp_path.glob("pg-*"))

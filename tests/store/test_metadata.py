"""The metadata store against real SQLite and a real PostgreSQL server (conformance suite)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mlengine.errors import AlreadyExists, InvalidArgument, NotFound
from mlengine.store import JobRecord, MetadataStore, get_store, parse_filter
from mlengine.store._schema import Base
from tests.support.postgres import create_database, running_postgres

FIELDS = frozenset({"jobId", "state", "labels", "createTime"})


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_postgres(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metadata.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        url = create_database(base, f"t_{uuid.uuid4().hex[:12]}")
    instance = MetadataStore(url)
    instance.upgrade()
    yield instance
    instance.dispose()


def job(job_id: str, seconds: int = 0, state: str = "QUEUED", **fields: object) -> JobRecord:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    return JobRecord(
        project="p",
        job_id=job_id,
        kind="training",
        state=state,
        create_time=created,
        etag="e",
        training_input={"pythonModule": "trainer.task", "args": ["--x", "1"]},
        **fields,  # type: ignore[arg-type]
    )


def test_migrated_schema_matches_the_models(store: MetadataStore) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent(store: MetadataStore) -> None:
    store.upgrade()
    store.insert_job(job("a"))
    store.upgrade()
    assert store.get_job("p", "a").job_id == "a"


_MIGRATE_TOGETHER = """
import sys, time
from pathlib import Path
from mlengine.store import MetadataStore
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
MetadataStore(sys.argv[1]).upgrade()
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_that_start_together_each_migrate_a_fresh_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As `server run --workers N` on a new home: every worker migrates at once."""
    import subprocess
    import sys

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh' / 'metadata.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_url"), f"t_{uuid.uuid4().hex[:12]}")
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_TOGETHER, url, str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    go.touch()
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr[-2000:]
    store = MetadataStore(url)
    try:
        store.insert_job(job("after"))
        assert store.get_job("p", "after").job_id == "after"
    finally:
        store.dispose()


def test_insert_get_round_trip(store: MetadataStore) -> None:
    record = job("a", labels={"team": "ml"})
    store.insert_job(record)
    stored = store.get_job("p", "a")
    assert stored == record
    assert stored.create_time.tzinfo is not None


def test_duplicate_job_is_rejected_and_original_kept(store: MetadataStore) -> None:
    store.insert_job(job("a", labels={"team": "ml"}))
    with pytest.raises(AlreadyExists, match="'a' already exists"):
        store.insert_job(job("a", seconds=5, labels={"other": "x"}))
    assert store.get_job("p", "a").labels == {"team": "ml"}


def test_missing_job(store: MetadataStore) -> None:
    with pytest.raises(NotFound, match="projects/p/jobs/nope"):
        store.get_job("p", "nope")
    with pytest.raises(NotFound):
        store.update_job("p", "nope", state="RUNNING")


@pytest.mark.parametrize("text", ["", "createTime:2026*"])
def test_paging_newest_first_covers_every_job_once(store: MetadataStore, text: str) -> None:
    for i in range(7):
        store.insert_job(job(f"j{i}", seconds=i // 2))  # ties on create_time too
    seen: list[str] = []
    token = None
    while True:
        terms = parse_filter(text, FIELDS)
        page, token = store.list_jobs("p", terms, page_size=3, page_token=token)
        assert len(page) <= 3
        seen += [r.job_id for r in page]
        if token is None:
            break
    assert sorted(seen) == [f"j{i}" for i in range(7)]
    assert len(seen) == 7
    created = [store.get_job("p", s).create_time for s in seen]
    assert created == sorted(created, reverse=True)


def test_filters(store: MetadataStore) -> None:
    store.insert_job(job("census_1", 1, labels={"team": "a"}))
    store.insert_job(job("census_2", 2, state="FAILED", labels={"team": "b"}))
    store.insert_job(job("rnn_1", 3, state="FAILED", labels={"team": "a"}))

    def ids(text: str) -> list[str]:
        return sorted(r.job_id for r in store.list_jobs("p", parse_filter(text, FIELDS))[0])

    assert ids("jobId:census*") == ["census_1", "census_2"]
    assert ids("jobId:rnn* AND state:FAILED") == ["rnn_1"]
    assert ids("state:FAILED labels.team:a") == ["rnn_1"]
    assert ids("labels.team:a") == ["census_1", "rnn_1"]
    assert ids("jobId:census_1") == ["census_1"]
    assert ids("jobId:%*") == []  # no LIKE wildcards
    assert ids("jobId:CENSUS*") == []  # case-sensitive, also on SQLite
    assert ids("labels.team:A") == []
    assert ids("createTime:2026-01-01T00:00:02*") == ["census_2"]
    assert ids("createTime:2026-01-01T00:00:03.000000Z") == ["rnn_1"]
    assert ids("createTime:2026-01-01* AND labels.team:a") == ["census_1", "rnn_1"]
    assert ids("createTime:1999*") == []
    assert store.list_jobs("other", ())[0] == []


def test_bad_filter_and_token() -> None:
    with pytest.raises(InvalidArgument, match="Unsupported filter field 'foo'"):
        parse_filter("foo:bar", FIELDS)
    with pytest.raises(InvalidArgument, match="Unsupported filter term"):
        parse_filter("state=", FIELDS)


def test_bad_page_token(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgument, match="pageToken"):
        store.list_jobs("p", page_token="not-a-token")


def test_compare_and_set_update(store: MetadataStore) -> None:
    store.insert_job(job("a"))
    assert not store.update_job("p", "a", from_states={"RUNNING"}, state="SUCCEEDED")
    assert store.get_job("p", "a").state == "QUEUED"
    started = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert store.update_job(
        "p",
        "a",
        from_states={"QUEUED"},
        state="RUNNING",
        start_time=started,
        runner_state={"replicas": [{"pid": 1}]},
        labels={"k": "v"},
    )
    stored = store.get_job("p", "a")
    assert (stored.state, stored.start_time, stored.labels) == ("RUNNING", started, {"k": "v"})
    assert stored.runner_state == {"replicas": [{"pid": 1}]}


def test_concurrent_claims_succeed_once(store: MetadataStore) -> None:
    store.insert_job(job("a"))
    results: list[bool] = []
    lock = threading.Lock()

    def claim() -> None:
        won = store.update_job("p", "a", from_states={"QUEUED"}, state="PREPARING")
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_queue_position_and_states(store: MetadataStore) -> None:
    for i in range(3):
        store.insert_job(job(f"q{i}", i))
    store.insert_job(job("r", 10, state="RUNNING"))
    positions = [
        store.queue_position("p", f"q{i}", store.get_job("p", f"q{i}").create_time)
        for i in range(3)
    ]
    assert positions == [1, 2, 3]
    assert [r.job_id for r in store.jobs_in_states({"QUEUED"})] == ["q0", "q1", "q2"]
    assert [r.job_id for r in store.jobs_in_states({"RUNNING"})] == ["r"]


def test_lease_has_one_live_owner(store: MetadataStore) -> None:
    assert store.acquire_lease("scheduler", "a", ttl_s=10, now=100.0)
    assert not store.acquire_lease("scheduler", "b", ttl_s=10, now=105.0)
    assert store.acquire_lease("scheduler", "a", ttl_s=10, now=105.0)  # renew
    assert store.lease_owner("scheduler", now=110.0) == "a"
    assert store.acquire_lease("scheduler", "b", ttl_s=10, now=116.0)  # a expired
    assert not store.acquire_lease("scheduler", "a", ttl_s=10, now=117.0)
    store.release_lease("scheduler", "a")  # not the owner: no effect
    assert store.lease_owner("scheduler", now=118.0) == "b"
    store.release_lease("scheduler", "b")
    assert store.lease_owner("scheduler", now=118.0) is None


def test_get_store_accepts_url_or_instance(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'm.db'}"
    first = get_store(url)
    assert get_store(url) is first
    assert get_store(first) is first
    first.insert_job(job("a"))
    assert first.get_job("p", "a").job_id == "a"

"""The metadata store: jobs (and, later, models, versions, operations) in one SQL database.

SQLite (WAL, busy timeout) by default, PostgreSQL by URL; one SQLAlchemy implementation.
Backend errors are translated into `StoreUnavailable` here, so callers never see SQLAlchemy's
exception types.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Engine,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from mlengine.errors import AlreadyExists, InvalidArgument, NotFound, StoreUnavailable
from mlengine.store._filter import FilterTerm
from mlengine.store._schema import JobLabelRow, JobRow, LeaseRow

__all__ = ["JobRecord", "MetadataStore", "get_store"]

_JOB_COLUMNS = (
    "kind",
    "state",
    "create_time",
    "start_time",
    "end_time",
    "error_message",
    "etag",
    "training_input",
    "training_output",
    "prediction_input",
    "prediction_output",
    "runner",
    "runner_state",
    "cancel_requested",
)


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One stored job. Times are timezone-aware UTC; `state` is a `JobState` name."""

    project: str
    job_id: str
    kind: str
    state: str
    create_time: dt.datetime
    etag: str
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    error_message: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    training_input: Mapping[str, Any] | None = None
    training_output: Mapping[str, Any] | None = None
    prediction_input: Mapping[str, Any] | None = None
    prediction_output: Mapping[str, Any] | None = None
    runner: str = "local"
    runner_state: Mapping[str, Any] | None = None
    cancel_requested: bool = False


def _naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)


def _record(row: JobRow, labels: Mapping[str, str]) -> JobRecord:
    return JobRecord(
        project=row.project,
        job_id=row.job_id,
        kind=row.kind,
        state=row.state,
        create_time=_aware(row.create_time),  # type: ignore[arg-type]
        start_time=_aware(row.start_time),
        end_time=_aware(row.end_time),
        error_message=row.error_message or "",
        etag=row.etag,
        labels=dict(labels),
        training_input=row.training_input,
        training_output=row.training_output,
        prediction_input=row.prediction_input,
        prediction_output=row.prediction_output,
        runner=row.runner,
        runner_state=row.runner_state,
        cancel_requested=bool(row.cancel_requested),
    )


_MIGRATION_LOCK_KEY = 0x6D6C656E67696E65  # "mlengine": the PostgreSQL advisory lock


class MetadataStore:
    """Jobs, labels and scheduler leases in one SQL database.

    Thread-safe: every method opens its own session. Methods raise `StoreUnavailable` when the
    database cannot be reached, `NotFound`/`AlreadyExists` for missing or duplicate resources.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use."""
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
                self._sessions = sessionmaker(self._engine, expire_on_commit=False)
            return self._engine

    def _create_engine(self) -> Engine:
        try:
            if self.url.startswith("sqlite"):
                path = self.url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(
                    self.url,
                    connect_args={"timeout": 30, "check_same_thread": False},
                    poolclass=NullPool,
                )
                event.listen(engine, "connect", _sqlite_pragmas)
                return engine
            return create_engine(self.url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            hint = ""
            if "psycopg" in str(error):
                hint = " Install it with: pip install 'mlengine[postgres]'"
            raise StoreUnavailable(f"Cannot use database {self.url}: {error}.{hint}") from error

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        self.engine  # noqa: B018 - creates the session factory
        assert self._sessions is not None
        try:
            with self._sessions.begin() as session:
                yield session
        except (AlreadyExists, NotFound, InvalidArgument):
            raise
        except OperationalError as error:
            raise StoreUnavailable(f"The metadata database failed: {error.orig}") from error

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision (Alembic ``upgrade head``)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("mlengine.store") / "migrations")
        )
        try:
            with self._migration_lock(), self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":  # one migrating server at a time
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as error:
            raise StoreUnavailable(f"Cannot migrate the metadata database: {error.orig}") from error

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """For a SQLite file, an exclusive lock on ``<file>.migrate.lock`` while migrating:
        processes that start together (``server run --workers N``) would otherwise both try to
        create the schema, and SQLite refuses the second writer at once ("database is locked")
        instead of waiting. (PostgreSQL: an advisory lock, taken in the migration itself.)"""
        path = self.url.split("///", 1)[-1] if self.url.startswith("sqlite") else ""
        if not path or path == ":memory:":
            yield
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock
            yield
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def dispose(self) -> None:
        """Close pooled connections."""
        if self._engine is not None:
            self._engine.dispose()

    # -- jobs -----------------------------------------------------------------------------
    def insert_job(self, record: JobRecord) -> None:
        """Store a new job and its labels in one transaction.

        Raises:
            AlreadyExists: the project already has a job with that id.
        """
        try:
            with self._session() as session:
                values = {c: getattr(record, c) for c in _JOB_COLUMNS}
                for column in ("create_time", "start_time", "end_time"):
                    values[column] = _naive_utc(values[column])
                session.add(JobRow(project=record.project, job_id=record.job_id, **values))
                session.flush()
                for key, value in record.labels.items():
                    session.add(
                        JobLabelRow(
                            project=record.project, job_id=record.job_id, key=key, value=value
                        )
                    )
        except IntegrityError:
            raise AlreadyExists(
                f"A job with id {record.job_id!r} already exists in project {record.project!r}."
            ) from None

    def get_job(self, project: str, job_id: str) -> JobRecord:
        """Return one job.

        Raises:
            NotFound: no such job.
        """
        with self._session() as session:
            row = session.get(JobRow, (project, job_id))
            if row is None:
                raise NotFound(f"Job projects/{project}/jobs/{job_id} not found.")
            return _record(row, self._labels(session, [(project, job_id)]).get(job_id, {}))

    def _labels(
        self, session: Session, keys: Sequence[tuple[str, str]]
    ) -> dict[str, dict[str, str]]:
        if not keys:
            return {}
        project = keys[0][0]
        ids = [job_id for _, job_id in keys]
        labels: dict[str, dict[str, str]] = {}
        query = select(JobLabelRow).where(
            JobLabelRow.project == project, JobLabelRow.job_id.in_(ids)
        )
        for label in session.scalars(query):
            labels.setdefault(label.job_id, {})[label.key] = label.value
        return labels

    def list_jobs(
        self,
        project: str,
        terms: Sequence[FilterTerm] = (),
        page_size: int = 20,
        page_token: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """List a project's jobs, newest first, filtered by `terms` (fields ``jobId``,
        ``state``, ``labels.KEY``, and ``createTime`` matched on its RFC 3339 text), one page
        at a time.

        Raises:
            InvalidArgument: a malformed page token or filter field.
        """
        query = select(JobRow).where(JobRow.project == project)
        time_terms = [term for term in terms if term.field == "createTime"]
        for term in terms:
            if term.field != "createTime":
                query = query.where(_job_condition(term, project))
        query = query.order_by(JobRow.create_time.desc(), JobRow.job_id.desc())
        after = _decode_token(page_token) if page_token else None
        # createTime terms match the rendered RFC 3339 text, so they are applied here, on
        # batches read in order; the other terms are SQL conditions.
        batch_size = page_size + 1 if not time_terms else 500
        with self._session() as session:
            rows: list[JobRow] = []
            while len(rows) <= page_size:
                batch_query = query
                if after is not None:
                    created, job_id = after
                    batch_query = query.where(
                        or_(
                            JobRow.create_time < created,
                            and_(JobRow.create_time == created, JobRow.job_id < job_id),
                        )
                    )
                batch = list(session.scalars(batch_query.limit(batch_size)))
                rows += [
                    row
                    for row in batch
                    if all(t.matches(rfc3339(row.create_time)) for t in time_terms)
                ]
                if len(batch) < batch_size:
                    break
                after = (batch[-1].create_time, batch[-1].job_id)
            more = len(rows) > page_size
            rows = rows[:page_size]
            labels = self._labels(session, [(r.project, r.job_id) for r in rows])
            records = [_record(row, labels.get(row.job_id, {})) for row in rows]
        token = _encode_token(rows[-1].create_time, rows[-1].job_id) if more else None
        return records, token

    def jobs_in_states(self, states: Collection[str]) -> list[JobRecord]:
        """Every job (all projects) in one of `states`, oldest first: the scheduler's view."""
        query = (
            select(JobRow)
            .where(JobRow.state.in_(list(states)))
            .order_by(JobRow.create_time, JobRow.job_id)
        )
        with self._session() as session:
            rows = list(session.scalars(query))
            return [_record(row, {}) for row in rows]

    def queue_position(self, project: str, job_id: str, created: dt.datetime) -> int:
        """1-based position of a QUEUED job among all queued jobs (all projects)."""
        created_naive = _naive_utc(created)
        query = (
            select(func.count())
            .select_from(JobRow)
            .where(
                JobRow.state == "QUEUED",
                or_(
                    JobRow.create_time < created_naive,
                    and_(JobRow.create_time == created_naive, JobRow.job_id <= job_id),
                ),
            )
        )
        with self._session() as session:
            return int(session.scalar(query) or 0)

    def update_job(
        self,
        project: str,
        job_id: str,
        *,
        from_states: Collection[str] | None = None,
        labels: Mapping[str, str] | None = None,
        **changes: Any,
    ) -> bool:
        """Change fields of a job in one transaction; with `from_states`, only when its state is
        one of them (compare-and-set). Returns whether the job was changed.

        Raises:
            NotFound: no such job.
        """
        unknown = set(changes) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        for column in ("create_time", "start_time", "end_time"):
            if column in changes:
                changes[column] = _naive_utc(changes[column])
        with self._session() as session:
            statement = update(JobRow).where(JobRow.project == project, JobRow.job_id == job_id)
            if from_states is not None:
                statement = statement.where(JobRow.state.in_(list(from_states)))
            if changes:
                result = session.execute(statement.values(**changes))
                changed = bool(result.rowcount)  # type: ignore[attr-defined]
            else:
                changed = session.get(JobRow, (project, job_id)) is not None
            if not changed:
                if session.get(JobRow, (project, job_id)) is None:
                    raise NotFound(f"Job projects/{project}/jobs/{job_id} not found.")
                return False
            if labels is not None:
                session.execute(
                    delete(JobLabelRow).where(
                        JobLabelRow.project == project, JobLabelRow.job_id == job_id
                    )
                )
                for key, value in labels.items():
                    session.add(JobLabelRow(project=project, job_id=job_id, key=key, value=value))
            return True

    # -- leases ---------------------------------------------------------------------------
    def acquire_lease(
        self, name: str, owner: str, ttl_s: float, now: float, replace: str | None = None
    ) -> bool:
        """Take or renew the lease `name` for `owner` until ``now + ttl_s``. Returns whether
        `owner` holds it now. Another owner keeps it until it expires, unless it is `replace`
        (an owner the caller knows is dead)."""
        with self._session() as session:
            result = session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == name,
                    or_(
                        LeaseRow.owner == owner,
                        LeaseRow.owner == (replace or owner),
                        LeaseRow.expires_at < now,
                    ),
                )
                .values(owner=owner, expires_at=now + ttl_s, acquired_at=now)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                return True
            present = session.scalar(select(exists().where(LeaseRow.name == name)))
            if present:
                return False
        try:
            with self._session() as session:
                session.add(
                    LeaseRow(name=name, owner=owner, expires_at=now + ttl_s, acquired_at=now)
                )
            return True
        except IntegrityError:
            return False

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if `owner` holds it."""
        with self._session() as session:
            session.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.owner == owner))

    def lease_owner(self, name: str, now: float) -> str | None:
        """The live owner of lease `name`, or None."""
        with self._session() as session:
            row = session.get(LeaseRow, name)
            return row.owner if row is not None and row.expires_at >= now else None


def _job_condition(term: FilterTerm, project: str) -> Any:
    if term.field in ("jobId", "state"):
        column = JobRow.job_id if term.field == "jobId" else JobRow.state
        return _matches(column, term)
    key = term.field.split(".", 1)[1]
    label_value = _matches(JobLabelRow.value, term)
    return exists().where(
        JobLabelRow.project == JobRow.project,
        JobLabelRow.job_id == JobRow.job_id,
        JobLabelRow.key == key,
        label_value,
    )


def _matches(column: Any, term: FilterTerm) -> Any:
    """Exact or prefix match, case-sensitive on every backend (SQLite's LIKE is not)."""
    if term.prefix:
        return func.substr(column, 1, len(term.value)) == term.value
    return column == term.value


def rfc3339(value: dt.datetime) -> str:
    """A time as ml v1 writes it: RFC 3339, UTC, microseconds, ``Z``."""
    naive = _naive_utc(value)
    assert naive is not None
    return naive.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode_token(created: dt.datetime, job_id: str) -> str:
    payload = orjson.dumps([created.isoformat(), job_id])
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created, job_id = orjson.loads(base64.urlsafe_b64decode(padded))
        return dt.datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidArgument(f"The 'pageToken' parameter is not valid. Got {token!r}.") from None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_STORES: dict[str, MetadataStore] = {}
_STORES_LOCK = threading.Lock()


def get_store(store: str | MetadataStore) -> MetadataStore:
    """Accept a URL or a store; a URL gives one shared, migrated store per process."""
    if isinstance(store, MetadataStore):
        return store
    with _STORES_LOCK:
        if store not in _STORES:
            instance = MetadataStore(store)
            instance.upgrade()
            _STORES[store] = instance
        return _STORES[store]

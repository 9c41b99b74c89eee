"""Models, versions and long-running operations in the metadata database."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from mlengine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from mlengine.store._metadata import MetadataStore, _aware, _naive_utc
from mlengine.store._schema import ModelRow, OperationRow, VersionRow

__all__ = ["ModelRecord", "OperationRecord", "RegistryStore", "VersionRecord"]


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One stored model. `default_version` is the short version name or None."""

    project: str
    name: str
    create_time: dt.datetime
    etag: str
    description: str = ""
    regions: tuple[str, ...] = ("us-central1",)
    default_version: str | None = None
    online_prediction_logging: bool = False
    online_prediction_console_logging: bool = False
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """One stored version: `spec` holds the ml v1 request fields as given (camelCase);
    `artifact_uri` is the copy in the artifact store that serving loads."""

    project: str
    model: str
    name: str
    state: str
    spec: Mapping[str, Any]
    create_time: dt.datetime
    etag: str
    artifact_uri: str | None = None
    error_message: str = ""
    last_use_time: dt.datetime | None = None
    revision_time: dt.datetime | None = None
    """When the version's code last changed: its creation, or an update of its
    ``predictionClass``/``packageUris``. A process that loaded an older revision reloads it.
    Read back from the store it is never None (the create time when unset)."""


@dataclasses.dataclass(frozen=True)
class OperationRecord:
    """One long-running operation (`projects/P/operations/ID`)."""

    project: str
    operation_id: str
    operation_type: str
    model: str
    create_time: dt.datetime
    version: str | None = None
    done: bool = False
    error: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    snapshot: Mapping[str, Any] | None = None
    owner: str | None = None
    """``host:pid`` of the server process working on it, while not done."""
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None


def _the_version(project: str, model: str, name: str | None) -> tuple[ColumnElement[bool], ...]:
    """The conditions that select one version row."""
    return (VersionRow.project == project, VersionRow.model == model, VersionRow.name == name)


def _pending_operation(project: str, operation_id: str) -> tuple[ColumnElement[bool], ...]:
    """The conditions that select one operation row while it is not done."""
    return (
        OperationRow.project == project,
        OperationRow.operation_id == operation_id,
        OperationRow.done.is_(False),
    )


class _RolledBack(Exception):
    """Raised inside a session to undo what it wrote."""


_TIMES = ("create_time", "start_time", "end_time", "last_use_time", "revision_time")

_Record = TypeVar("_Record", ModelRecord, VersionRecord, OperationRecord)


def _row_values(record: Any) -> dict[str, Any]:
    values = dataclasses.asdict(record)
    for key in _TIMES:
        if key in values:
            values[key] = _naive_utc(values[key])
    if "regions" in values:
        values["regions"] = list(values["regions"])
    return values


def _from_row(cls: Any, row: Any) -> Any:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}
    for key in _TIMES:
        if key in values:
            values[key] = _aware(values[key])
    if "regions" in values:
        values["regions"] = tuple(values["regions"] or ())
    if "revision_time" in values and values["revision_time"] is None:
        values["revision_time"] = values["create_time"]
    return cls(**values)


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _after(token: str | None) -> str | None:
    """The name a page token of `_token` continues after.

    Raises:
        InvalidArgument: not a token `_token` gives (urlsafe_b64decode alone skips stray
            characters, so "!!" would decode to "" and restart the list).
    """
    if not token:
        return None
    try:
        name = base64.b64decode(token + "=" * (-len(token) % 4), b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        name = ""
    if not name or not name.isprintable() or _token(name) != token:
        raise InvalidArgument(f"The 'pageToken' parameter is not valid. Got {token!r}.")
    return name


class RegistryStore:
    """Models, versions and operations, on the engine of a `MetadataStore`.

    Methods raise `NotFound`/`AlreadyExists` for missing or duplicate resources and
    `StoreUnavailable` when the database fails.
    """

    def __init__(self, metadata: MetadataStore) -> None:
        self.metadata = metadata

    # -- models ---------------------------------------------------------------------------
    def insert_model(self, record: ModelRecord) -> None:
        """Store a new model.

        Raises:
            AlreadyExists: the project has a model of that name.
        """
        try:
            with self.metadata._session() as session:
                session.add(ModelRow(**_row_values(record)))
        except IntegrityError:
            raise AlreadyExists(
                f"A model with name {record.name!r} already exists in project {record.project!r}."
            ) from None

    def get_model(self, project: str, name: str) -> ModelRecord:
        """Raises:
        NotFound: no such model."""
        return self._get(
            ModelRecord,
            ModelRow,
            (project, name),
            f"Model projects/{project}/models/{name} not found.",
        )

    @staticmethod
    def page_token_after(name: str) -> str:
        """The page token of the list page that continues after the model or version `name`."""
        return _token(name)

    def list_models(
        self, project: str, page_size: int = 20, page_token: str | None = None
    ) -> tuple[list[ModelRecord], str | None]:
        """One page of a project's models, by name."""
        query = select(ModelRow).where(ModelRow.project == project)
        return self._page(ModelRecord, query, ModelRow.name, page_size, page_token)

    def update_model(self, project: str, name: str, **changes: Any) -> None:
        """Change fields of a model.

        Raises:
            NotFound: no such model.
        """
        with self.metadata._session() as session:
            result = session.execute(
                update(ModelRow)
                .where(ModelRow.project == project, ModelRow.name == name)
                .values(**changes)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"Model projects/{project}/models/{name} not found.")

    def delete_model(self, project: str, name: str) -> None:
        """Delete a model that has no versions.

        Raises:
            NotFound: no such model.
            FailedPrecondition: it still has versions.
        """
        with self.metadata._session() as session:
            count = session.scalar(
                select(func.count())
                .select_from(VersionRow)
                .where(VersionRow.project == project, VersionRow.model == name)
            )
            if count:
                raise FailedPrecondition(
                    f"Model {name} has {count} version(s); delete them before the model."
                )
            result = session.execute(
                delete(ModelRow).where(ModelRow.project == project, ModelRow.name == name)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"Model projects/{project}/models/{name} not found.")

    # -- versions -------------------------------------------------------------------------
    def insert_version(self, record: VersionRecord, operation: OperationRecord) -> None:
        """Store a new version and the operation that creates it, in one transaction.

        Raises:
            NotFound: the model does not exist.
            AlreadyExists: the model has a version of that name.
        """
        taken = AlreadyExists(
            f"A version with name {record.name!r} already exists in model {record.model!r}."
        )
        try:
            with self.metadata._session() as session:
                if session.get(ModelRow, (record.project, record.model)) is None:
                    raise NotFound(
                        f"Model projects/{record.project}/models/{record.model} not found."
                    )
                if session.get(VersionRow, (record.project, record.model, record.name)):
                    raise taken
                session.add(VersionRow(**_row_values(record)))
                session.add(OperationRow(**_row_values(operation)))
        except IntegrityError:  # a concurrent create of the same name committed first
            raise taken from None

    def begin_version_update(self, record: VersionRecord, operation: OperationRecord) -> bool:
        """Mark a READY version UPDATING and store the operation that updates it, in one
        transaction; False (nothing written) when the version is no longer READY with the
        etag of `record` (it changed since it was read).

        Raises:
            NotFound: no such version.
        """
        with self.metadata._session() as session:
            result = session.execute(
                update(VersionRow)
                .where(
                    *_the_version(record.project, record.model, record.name),
                    VersionRow.state == "READY",
                    VersionRow.etag == record.etag,
                )
                .values(state="UPDATING")
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                if session.get(VersionRow, (record.project, record.model, record.name)) is None:
                    raise NotFound(
                        f"Version projects/{record.project}/models/{record.model}/versions/"
                        f"{record.name} not found."
                    )
                return False
            session.add(OperationRow(**_row_values(operation)))
            return True

    def get_version(self, project: str, model: str, name: str) -> VersionRecord:
        """Raises:
        NotFound: no such version (or model)."""
        return self._get(
            VersionRecord,
            VersionRow,
            (project, model, name),
            f"Version projects/{project}/models/{model}/versions/{name} not found.",
        )

    def list_versions(
        self, project: str, model: str, page_size: int = 20, page_token: str | None = None
    ) -> tuple[list[VersionRecord], str | None]:
        """One page of a model's versions, by name.

        Raises:
            NotFound: no such model.
        """
        self.get_model(project, model)
        query = select(VersionRow).where(VersionRow.project == project, VersionRow.model == model)
        return self._page(VersionRecord, query, VersionRow.name, page_size, page_token)

    def versions_in_states(self, states: Collection[str]) -> list[VersionRecord]:
        """Every version (all projects) in one of `states`."""
        with self.metadata._session() as session:
            rows = session.scalars(select(VersionRow).where(VersionRow.state.in_(list(states))))
            return [_from_row(VersionRecord, row) for row in rows]

    def update_version(
        self,
        project: str,
        model: str,
        name: str,
        *,
        from_states: Collection[str] | None = None,
        **changes: Any,
    ) -> bool:
        """Change fields of a version; with `from_states`, only in those states.

        Raises:
            NotFound: no such version.
        """
        for key in _TIMES:
            if key in changes:
                changes[key] = _naive_utc(changes[key])
        with self.metadata._session() as session:
            statement = update(VersionRow).where(
                VersionRow.project == project, VersionRow.model == model, VersionRow.name == name
            )
            if from_states is not None:
                statement = statement.where(VersionRow.state.in_(list(from_states)))
            result = session.execute(statement.values(**changes))
            if result.rowcount:  # type: ignore[attr-defined]
                return True
            if session.get(VersionRow, (project, model, name)) is None:
                raise NotFound(
                    f"Version projects/{project}/models/{model}/versions/{name} not found."
                )
            return False

    def delete_version(self, project: str, model: str, name: str) -> None:
        """Remove a version row (and clear the model's default when it was the default)."""
        with self.metadata._session() as session:
            session.execute(
                delete(VersionRow).where(
                    VersionRow.project == project,
                    VersionRow.model == model,
                    VersionRow.name == name,
                )
            )
            session.execute(
                update(ModelRow)
                .where(
                    ModelRow.project == project,
                    ModelRow.name == model,
                    ModelRow.default_version == name,
                )
                .values(default_version=None)
            )

    def set_default_if_none(self, project: str, model: str, name: str) -> bool:
        """Make `name` the default version when the model has none (the first version)."""
        with self.metadata._session() as session:
            result = session.execute(
                update(ModelRow)
                .where(
                    ModelRow.project == project,
                    ModelRow.name == model,
                    ModelRow.default_version.is_(None),
                )
                .values(default_version=name)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- operations -----------------------------------------------------------------------
    def insert_operation(self, record: OperationRecord) -> None:
        """Store a new operation."""
        with self.metadata._session() as session:
            session.add(OperationRow(**_row_values(record)))

    def get_operation(self, project: str, operation_id: str) -> OperationRecord:
        """Raises:
        NotFound: no such operation."""
        return self._get(
            OperationRecord,
            OperationRow,
            (project, operation_id),
            f"Operation projects/{project}/operations/{operation_id} not found.",
        )

    def list_operations(
        self, project: str, page_size: int = 20, page_token: str | None = None
    ) -> tuple[list[OperationRecord], str | None]:
        """One page of a project's operations, by id."""
        query = select(OperationRow).where(OperationRow.project == project)
        return self._page(OperationRecord, query, OperationRow.operation_id, page_size, page_token)

    def finish_operation(
        self,
        project: str,
        operation_id: str,
        *,
        end_time: dt.datetime,
        response: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> bool:
        """Mark an operation done with its response or error; one already done (cancelled,
        say) is left as it is. Returns whether it was marked."""
        with self.metadata._session() as session:
            result = session.execute(
                update(OperationRow)
                .where(*_pending_operation(project, operation_id))
                .values(done=True, end_time=_naive_utc(end_time), response=response, error=error)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def commit_version_update(self, operation: OperationRecord, **version_changes: Any) -> bool:
        """Apply `version_changes` to the UPDATING version of a pending UPDATE_VERSION
        `operation`, in one statement that also checks the operation is still not done (not
        cancelled: the version may be UPDATING again for another update). Returns whether it
        was applied."""
        for key in _TIMES:
            if key in version_changes:
                version_changes[key] = _naive_utc(version_changes[key])
        pending = (
            select(OperationRow.operation_id)
            .where(*_pending_operation(operation.project, operation.operation_id))
            .exists()
        )
        with self.metadata._session() as session:
            result = session.execute(
                update(VersionRow)
                .where(
                    *_the_version(operation.project, operation.model, operation.version),
                    VersionRow.state == "UPDATING",
                    pending,
                )
                .values(**version_changes)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def end_version_operation(
        self,
        operation: OperationRecord,
        *,
        from_state: str,
        end_time: dt.datetime,
        error: Mapping[str, Any],
        **version_changes: Any,
    ) -> bool:
        """End a pending operation on a version with `error` and apply `version_changes` to
        the version, in one transaction, if the operation is not done and the version is in
        `from_state` (its work not committed yet); else write nothing and return False."""
        try:
            with self.metadata._session() as session:
                changed = session.execute(
                    update(VersionRow)
                    .where(
                        *_the_version(operation.project, operation.model, operation.version),
                        VersionRow.state == from_state,
                    )
                    .values(**version_changes)
                )
                if not changed.rowcount:  # type: ignore[attr-defined]
                    return False
                ended = session.execute(
                    update(OperationRow)
                    .where(*_pending_operation(operation.project, operation.operation_id))
                    .values(done=True, end_time=_naive_utc(end_time), error=dict(error))
                )
                if not ended.rowcount:  # type: ignore[attr-defined]
                    raise _RolledBack  # ended meanwhile: the version keeps its state
        except _RolledBack:
            return False
        return True

    def pending_operations(self) -> list[OperationRecord]:
        """Operations not done yet (all projects)."""
        with self.metadata._session() as session:
            rows = session.scalars(select(OperationRow).where(OperationRow.done.is_(False)))
            return [_from_row(OperationRecord, row) for row in rows]

    # -- shared by the get_* and list_* methods ----------------------------------------------
    def _get(
        self, record_type: type[_Record], row_type: Any, key: tuple[str, ...], missing: str
    ) -> _Record:
        """The row of `row_type` with primary key `key`, as a `record_type`.

        Raises:
            NotFound: no such row; `missing` is the message.
        """
        with self.metadata._session() as session:
            row = session.get(row_type, key)
            if row is None:
                raise NotFound(missing)
            record: _Record = _from_row(record_type, row)
            return record

    def _page(
        self,
        record_type: type[_Record],
        query: Select[Any],
        order: InstrumentedAttribute[str],
        page_size: int,
        page_token: str | None,
    ) -> tuple[list[_Record], str | None]:
        """One page of `query`'s rows sorted by the unique column `order`, as `record_type`,
        and the token of the next page (None on the last page).

        Raises:
            InvalidArgument: `page_token` is not a token this store gave.
        """
        after = _after(page_token)
        if after is not None:
            query = query.where(order > after)
        query = query.order_by(order).limit(page_size + 1)
        with self.metadata._session() as session:
            rows = list(session.scalars(query))
            records = [_from_row(record_type, row) for row in rows[:page_size]]
        token = _token(getattr(records[-1], order.key)) if len(rows) > page_size else None
        return records, token

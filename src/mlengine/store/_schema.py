"""SQLAlchemy tables of the metadata store. Alembic migrations (``migrations/``) create them;
a test checks that the migrated schema equals these definitions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKeyConstraint, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime())
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)
    error_message: Mapped[str] = mapped_column(Text(), default="")
    etag: Mapped[str] = mapped_column(String(64))
    training_input: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    training_output: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    prediction_input: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    prediction_output: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    runner: Mapped[str] = mapped_column(String(32), default="local")
    runner_state: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean(), default=False)

    __table_args__ = (
        Index("ix_jobs_state_create_time", "state", "create_time"),
        Index("ix_jobs_project_create_time", "project", "create_time"),
    )


class JobLabelRow(Base):
    __tablename__ = "job_labels"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(63))

    __table_args__ = (
        ForeignKeyConstraint(
            ["project", "job_id"], ["jobs.project", "jobs.job_id"], ondelete="CASCADE"
        ),
        Index("ix_job_labels_key_value", "key", "value"),
    )


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float())
    acquired_at: Mapped[float] = mapped_column(Float())


class ModelRow(Base):
    __tablename__ = "models"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text(), default="")
    regions: Mapped[list[str]] = mapped_column(JSON())
    default_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    online_prediction_logging: Mapped[bool] = mapped_column(Boolean(), default=False)
    online_prediction_console_logging: Mapped[bool] = mapped_column(Boolean(), default=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON())
    etag: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime())


class VersionRow(Base):
    __tablename__ = "versions"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON())
    artifact_uri: Mapped[str | None] = mapped_column(Text(), nullable=True)
    error_message: Mapped[str] = mapped_column(Text(), default="")
    etag: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime())
    last_use_time: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)
    revision_time: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)

    __table_args__ = (
        ForeignKeyConstraint(["project", "model"], ["models.project", "models.name"]),
    )


class OperationRow(Base):
    __tablename__ = "operations"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    operation_type: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    done: Mapped[bool] = mapped_column(Boolean(), default=False)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON(), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime())
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)

    __table_args__ = (Index("ix_operations_model", "project", "model"),)

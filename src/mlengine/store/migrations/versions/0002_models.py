"""models, versions and long-running operations

Revision ID: 0002_models
Revises: 0001_jobs
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_models"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("default_version", sa.String(128), nullable=True),
        sa.Column("online_prediction_logging", sa.Boolean(), nullable=False),
        sa.Column("online_prediction_console_logging", sa.Boolean(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("last_use_time", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["project", "model"], ["models.project", "models.name"]),
    )
    op.create_table(
        "operations",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("operation_id", sa.String(256), primary_key=True),
        sa.Column("operation_type", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("snapshot", sa.JSON(), nullable=True),
        sa.Column("owner", sa.String(256), nullable=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_operations_model", "operations", ["project", "model"])


def downgrade() -> None:
    op.drop_index("ix_operations_model", "operations")
    op.drop_table("operations")
    op.drop_table("versions")
    op.drop_table("models")

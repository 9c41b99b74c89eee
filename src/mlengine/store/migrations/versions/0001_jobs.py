"""jobs, job labels and scheduler leases

Revision ID: 0001_jobs
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("training_input", sa.JSON(), nullable=True),
        sa.Column("training_output", sa.JSON(), nullable=True),
        sa.Column("prediction_input", sa.JSON(), nullable=True),
        sa.Column("prediction_output", sa.JSON(), nullable=True),
        sa.Column("runner", sa.String(32), nullable=False),
        sa.Column("runner_state", sa.JSON(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_jobs_state_create_time", "jobs", ["state", "create_time"])
    op.create_index("ix_jobs_project_create_time", "jobs", ["project", "create_time"])
    op.create_table(
        "job_labels",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(63), nullable=False),
        sa.ForeignKeyConstraint(
            ["project", "job_id"], ["jobs.project", "jobs.job_id"], ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_labels_key_value", "job_labels", ["key", "value"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_job_labels_key_value", "job_labels")
    op.drop_table("job_labels")
    op.drop_index("ix_jobs_project_create_time", "jobs")
    op.drop_index("ix_jobs_state_create_time", "jobs")
    op.drop_table("jobs")

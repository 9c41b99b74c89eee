"""versions.revision_time: when a version's code last changed

Revision ID: 0003_version_revisions
Revises: 0002_models
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_version_revisions"
down_revision = "0002_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("versions", sa.Column("revision_time", sa.DateTime(), nullable=True))
    op.execute("UPDATE versions SET revision_time = create_time")


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("revision_time")

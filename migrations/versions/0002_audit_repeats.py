"""audit rows count repeats: one row per refused client, event and outcome per window

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("count", sa.Integer(), server_default="1",
                                      nullable=False))
        batch_op.add_column(sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_events_client"), ["client"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_client"))
        batch_op.drop_column("last_at")
        batch_op.drop_column("count")

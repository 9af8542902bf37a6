"""the deployment's fair queue for DigitalOcean slots: budget_tickets, and who spent each
slot of the window (do_requests.spender)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("do_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spender", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_do_requests_spender_at", ["spender", "at"], unique=False)
    op.create_table(
        "budget_tickets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("lane", sa.Integer(), nullable=False),
        sa.Column("spent", sa.Integer(), nullable=False),
        sa.Column("spender", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_tickets")),
    )
    with op.batch_alter_table("budget_tickets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budget_tickets_expires_at"), ["expires_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("budget_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_tickets_expires_at"))
    op.drop_table("budget_tickets")
    with op.batch_alter_table("do_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_do_requests_spender_at")
        batch_op.drop_column("spender")

"""Gate runs: every verdict with its failures and the policy that produced it; trend index on audits.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("failures", sa.JSON, nullable=False),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("compared_with", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audits_model_name_created_at", "audits", ["model_name", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_audits_model_name_created_at", table_name="audits")
    op.drop_table("gate_runs")

"""Lineage: the datasets audits read (by content fingerprint) and which audited model used which, how.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=True),
        sa.Column("version", sa.String(255), nullable=True),
        sa.Column("scan", sa.JSON, nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataset_uses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column(
            "dataset_id", sa.Integer, sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.UniqueConstraint("audit_id", "dataset_id", "role", name="uq_dataset_uses_audit_dataset_role"),
    )


def downgrade() -> None:
    op.drop_table("dataset_uses")
    op.drop_table("datasets")

"""The audits table: one row per recorded audit, with its model, fingerprints, metrics and verdict.

Revision ID: 0001
Revises: none
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("audit_key", sa.String(64), nullable=False, unique=True),
        sa.Column("model_name", sa.String(255), nullable=False, index=True),
        sa.Column("model_version", sa.String(255), nullable=True),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("fingerprints", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("verdict", sa.String(4), nullable=True),
        sa.Column("report_path", sa.Text, nullable=True),
        sa.Column("out_dir", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audits")

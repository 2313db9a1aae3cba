"""Key lifecycle and incidents: a key's owner, revocation and rotation (the old key's grace period), the
records each key queried with the answers it was given, and the guard's policy when an alert was raised.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("guard_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "guard_key_grace",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("guard_keys.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "guard_queries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("n_records", sa.Integer, nullable=False),
        sa.Column("n_features", sa.Integer, nullable=False),
        sa.Column("records", sa.LargeBinary, nullable=False),
        sa.Column("n_classes", sa.Integer, nullable=True),
        sa.Column("answers", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_guard_queries_model_key_created", "guard_queries", ["model_name", "key_name", "created_at"])
    with op.batch_alter_table("guard_alerts") as batch:
        batch.add_column(sa.Column("policy", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guard_alerts") as batch:
        batch.drop_column("policy")
    op.drop_index("ix_guard_queries_model_key_created", table_name="guard_queries")
    op.drop_table("guard_queries")
    op.drop_table("guard_key_grace")
    with op.batch_alter_table("guard_keys") as batch:
        batch.drop_column("rotated_at")
        batch.drop_column("revoked_at")
        batch.drop_column("owner")

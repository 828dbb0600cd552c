"""pool administration

Foundation roles, membership applications and the indexed register (members),
the append-only audit log, patents with their events and assessments,
contribution mints, fund deposits and royalty runs.

The audit log refuses UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) by
trigger on both databases. A later SQLite batch migration that rebuilds
``audit_log`` must create the triggers again.

Revision ID: f7df11793aa3
Revises: b51650490832
Create Date: 2026-11-22 00:11:01.375393+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

APPEND_ONLY_MESSAGE = "audit_log is append-only"

revision: str = "f7df11793aa3"
down_revision: str | None = "b51650490832"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("tx_hashes", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_log_subject_type_subject_id"), ["subject_type", "subject_id"], unique=False
        )

    op.create_table(
        "foundation_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('council', 'registrar', 'assessor')", name=op.f("ck_foundation_roles_role_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_foundation_roles")),
    )
    with op.batch_alter_table("foundation_roles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_foundation_roles_address_role"),
            ["address", "role"],
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        )

    op.create_table(
        "membership_applications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wallet", sa.String(length=42), nullable=False),
        sa.Column("organisation", sa.String(length=200), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("enterprise_size", sa.String(length=16), nullable=False),
        sa.Column("size_evidence", sa.Text(), nullable=False),
        sa.Column("non_profit", sa.Boolean(), nullable=False),
        sa.Column("contact_name", sa.String(length=200), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("approved_tier", sa.String(length=16), nullable=True),
        sa.Column("admit_tx_hash", sa.String(length=66), nullable=True),
        sa.CheckConstraint(
            "approved_tier IS NULL OR approved_tier IN ('non_profit', 'small', 'medium', 'large')",
            name=op.f("ck_membership_applications_approved_tier_known"),
        ),
        sa.CheckConstraint(
            "enterprise_size IN ('small', 'medium', 'large')",
            name=op.f("ck_membership_applications_enterprise_size_known"),
        ),
        sa.CheckConstraint(
            "status IN ('submitted', 'under_review', 'approved', 'rejected')",
            name=op.f("ck_membership_applications_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_membership_applications")),
    )
    with op.batch_alter_table("membership_applications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_membership_applications_status_id"), ["status", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_membership_applications_wallet"),
            ["wallet"],
            unique=True,
            sqlite_where=sa.text("status IN ('submitted', 'under_review')"),
            postgresql_where=sa.text("status IN ('submitted', 'under_review')"),
        )

    op.create_table(
        "pool_indexer_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("contract", sa.String(length=42), nullable=False),
        sa.Column("anchor_block_hash", sa.String(length=66), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("block >= 0", name=op.f("ck_pool_indexer_cursors_block_not_negative")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pool_indexer_cursors")),
    )
    op.create_table(
        "pool_patents",
        sa.Column("patent_id", sa.String(length=32), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=2), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=True),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("contributor", sa.String(length=42), nullable=True),
        sa.Column("filing_date", sa.Date(), nullable=True),
        sa.Column("grant_date", sa.Date(), nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("in_pool_since", sa.Date(), nullable=True),
        sa.Column("left_pool_on", sa.Date(), nullable=True),
        sa.Column("retirement_reason", sa.String(length=20), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("mint_policy_version", sa.String(length=64), nullable=True),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "field IN ('blockchain', 'ai', 'big_data', 'quantum', 'gene')",
            name=op.f("ck_pool_patents_field_known"),
        ),
        sa.CheckConstraint(
            "retirement_reason IS NULL OR retirement_reason IN ('expired', 'non_core', 'transferred_out')",
            name=op.f("ck_pool_patents_retirement_reason_known"),
        ),
        sa.CheckConstraint(
            "source IN ('contributed', 'purchased', 'filed')", name=op.f("ck_pool_patents_source_known")
        ),
        sa.CheckConstraint(
            "status IN ('proposed', 'under_assessment', 'in_pool', 'retired', 'rejected')",
            name=op.f("ck_pool_patents_status_known"),
        ),
        sa.CheckConstraint(
            "score IS NULL OR (score >= 0 AND score <= 100)", name=op.f("ck_pool_patents_score_range")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_pool_patents_version_positive")),
        sa.PrimaryKeyConstraint("patent_id", name=op.f("pk_pool_patents")),
    )
    with op.batch_alter_table("pool_patents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pool_patents_contributor"), ["contributor"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_pool_patents_status_country"), ["status", "country"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pool_patents_status_expires_on"), ["status", "expires_on"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_pool_patents_status_field"), ["status", "field"], unique=False)

    op.create_table(
        "pool_royalty_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("period_id", sa.String(length=64), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("received_wei", sa.String(length=78), nullable=False),
        sa.Column("carry_in_wei", sa.String(length=78), nullable=False),
        sa.Column("paid_wei", sa.String(length=78), nullable=False),
        sa.Column("carry_out_wei", sa.String(length=78), nullable=False),
        sa.Column("total_weight", sa.BigInteger(), nullable=False),
        sa.Column("remainder_rule", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payout_tag", sa.String(length=66), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('computed', 'paying', 'paid')", name=op.f("ck_pool_royalty_runs_status_known")
        ),
        sa.CheckConstraint("starts_on <= ends_on", name=op.f("ck_pool_royalty_runs_period_ordered")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_royalty_runs")),
        sa.UniqueConstraint("token", "period_id", name=op.f("uq_pool_royalty_runs_token_period_id")),
    )
    op.create_table(
        "members",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=True),
        sa.Column("last_block", sa.BigInteger(), nullable=False),
        sa.Column("last_log_index", sa.Integer(), nullable=False),
        sa.Column("last_tx_hash", sa.String(length=66), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'expelled')", name=op.f("ck_members_status_known")
        ),
        sa.CheckConstraint(
            "tier IN ('non_profit', 'small', 'medium', 'large')", name=op.f("ck_members_tier_known")
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["membership_applications.id"],
            name=op.f("fk_members_application_id_membership_applications"),
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_members")),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_members_status"), ["status"], unique=False)

    op.create_table(
        "pool_assessments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patent_id", sa.String(length=32), nullable=False),
        sa.Column("expert", sa.String(length=42), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("core", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 100", name=op.f("ck_pool_assessments_score_range")),
        sa.ForeignKeyConstraint(
            ["patent_id"], ["pool_patents.patent_id"], name=op.f("fk_pool_assessments_patent_id_pool_patents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_assessments")),
        sa.UniqueConstraint("patent_id", "expert", name=op.f("uq_pool_assessments_patent_id_expert")),
    )
    op.create_table(
        "pool_contribution_mints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patent_id", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=66), nullable=False),
        sa.Column("recipient", sa.String(length=42), nullable=False),
        sa.Column("amount_wei", sa.String(length=78), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("from_block", sa.BigInteger(), nullable=True),
        sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("minted_block", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'minted', 'failed')",
            name=op.f("ck_pool_contribution_mints_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["patent_id"],
            ["pool_patents.patent_id"],
            name=op.f("fk_pool_contribution_mints_patent_id_pool_patents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_contribution_mints")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_pool_contribution_mints_idempotency_key")),
        sa.UniqueConstraint("patent_id", name=op.f("uq_pool_contribution_mints_patent_id")),
        sa.UniqueConstraint("tx_hash", name=op.f("uq_pool_contribution_mints_tx_hash")),
    )
    with op.batch_alter_table("pool_contribution_mints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pool_contribution_mints_status"), ["status"], unique=False)

    op.create_table(
        "pool_fund_deposits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("sender", sa.String(length=42), nullable=False),
        sa.Column("amount_wei", sa.String(length=78), nullable=False),
        sa.Column("source", sa.String(length=66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pool_royalty_runs.id"], name=op.f("fk_pool_fund_deposits_run_id_pool_royalty_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_fund_deposits")),
        sa.UniqueConstraint("tx_hash", "log_index", name=op.f("uq_pool_fund_deposits_tx_hash_log_index")),
    )
    with op.batch_alter_table("pool_fund_deposits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pool_fund_deposits_token_run_id"), ["token", "run_id"], unique=False
        )

    op.create_table(
        "pool_patent_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patent_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patent_id"],
            ["pool_patents.patent_id"],
            name=op.f("fk_pool_patent_events_patent_id_pool_patents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_patent_events")),
        sa.UniqueConstraint("patent_id", "version", name=op.f("uq_pool_patent_events_patent_id_version")),
    )
    op.create_table(
        "pool_royalty_payout_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("from_block", sa.BigInteger(), nullable=True),
        sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'paid')",
            name=op.f("ck_pool_royalty_payout_batches_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pool_royalty_runs.id"],
            name=op.f("fk_pool_royalty_payout_batches_run_id_pool_royalty_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_royalty_payout_batches")),
        sa.UniqueConstraint(
            "run_id", "batch_index", name=op.f("uq_pool_royalty_payout_batches_run_id_batch_index")
        ),
    )
    op.create_table(
        "pool_royalty_stakes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("patent_id", sa.String(length=32), nullable=False),
        sa.Column("contributor", sa.String(length=42), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("in_pool_from", sa.Date(), nullable=False),
        sa.Column("in_pool_until", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pool_royalty_runs.id"], name=op.f("fk_pool_royalty_stakes_run_id_pool_royalty_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_royalty_stakes")),
        sa.UniqueConstraint("run_id", "patent_id", name=op.f("uq_pool_royalty_stakes_run_id_patent_id")),
    )
    op.create_table(
        "pool_royalty_payouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("contributor", sa.String(length=42), nullable=False),
        sa.Column("amount_wei", sa.String(length=78), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["pool_royalty_payout_batches.id"],
            name=op.f("fk_pool_royalty_payouts_batch_id_pool_royalty_payout_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pool_royalty_runs.id"],
            name=op.f("fk_pool_royalty_payouts_run_id_pool_royalty_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_royalty_payouts")),
        sa.UniqueConstraint("run_id", "contributor", name=op.f("uq_pool_royalty_payouts_run_id_contributor")),
    )
    _make_audit_log_append_only()


def _make_audit_log_append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{operation.lower()} BEFORE {operation} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_refuse_change()")
    else:
        op.execute("DROP TRIGGER audit_log_no_update")
        op.execute("DROP TRIGGER audit_log_no_delete")
    op.drop_table("pool_royalty_payouts")
    op.drop_table("pool_royalty_stakes")
    op.drop_table("pool_royalty_payout_batches")
    op.drop_table("pool_patent_events")
    with op.batch_alter_table("pool_fund_deposits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_fund_deposits_token_run_id"))

    op.drop_table("pool_fund_deposits")
    with op.batch_alter_table("pool_contribution_mints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_contribution_mints_status"))

    op.drop_table("pool_contribution_mints")
    op.drop_table("pool_assessments")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_status"))

    op.drop_table("members")
    op.drop_table("pool_royalty_runs")
    with op.batch_alter_table("pool_patents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_patents_status_field"))
        batch_op.drop_index(batch_op.f("ix_pool_patents_status_expires_on"))
        batch_op.drop_index(batch_op.f("ix_pool_patents_status_country"))
        batch_op.drop_index(batch_op.f("ix_pool_patents_contributor"))

    op.drop_table("pool_patents")
    op.drop_table("pool_indexer_cursors")
    with op.batch_alter_table("membership_applications", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_membership_applications_wallet"),
            sqlite_where=sa.text("status IN ('submitted', 'under_review')"),
            postgresql_where=sa.text("status IN ('submitted', 'under_review')"),
        )
        batch_op.drop_index(batch_op.f("ix_membership_applications_status_id"))

    op.drop_table("membership_applications")
    with op.batch_alter_table("foundation_roles", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_foundation_roles_address_role"),
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        )

    op.drop_table("foundation_roles")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_subject_type_subject_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")

"""The database layer on SQLite and PostgreSQL: migrations, engine set-up, the deployment repository,
and the one-transaction-per-request session dependency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import APIRouter
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from exchange.db.base import Base, UTCDateTime
from exchange.db.deployments import latest_deployment, manifest_sha256, record_deployment
from exchange.db.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine_for_url, create_sessionmaker
from exchange.db.migrate import alembic_config, head_revision, migration_context_options, upgrade_to_head
from exchange.db.models import ChainDeployment
from exchange.db.session import DbSession
from exchange.kit.errors import Conflict, ValidationFailed
from tests.conftest import StartApp, run_in_thread

MANIFEST: dict[str, Any] = {
    "chain_id": 31337,
    "contracts": {
        "BPC": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "Fund": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    },
    "note": "pool — first deployment",
}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine_for_url(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with create_sessionmaker(engine)() as session:
        yield session


async def _row_count(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine)() as session:
        count: int = await session.scalar(select(func.count()).select_from(ChainDeployment)) or 0
        return count


# --------------------------------------------------------------------------- migrations


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts=migration_context_options(connection.dialect.name))
    differences: list[Any] = compare_metadata(context, Base.metadata)
    return differences


async def test_migrations_create_exactly_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)
        revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert differences == []
    assert revision == head_revision()


_INDEX_DEFINITIONS = {
    "postgresql": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "sqlite": "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
}


async def _index_definitions(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(_INDEX_DEFINITIONS[engine.dialect.name]))
        return {
            name: " ".join(definition.split()) for name, definition in rows if not name.startswith("alembic_")
        }


async def test_migrations_create_the_models_indexes_with_their_predicates(
    engine: AsyncEngine, empty_database_url: str
) -> None:
    # The comparison above does not look at a partial index's WHERE: compare the definitions.
    declared = create_engine_for_url(empty_database_url)
    try:
        async with declared.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        expected = await _index_definitions(declared)
    finally:
        await declared.dispose()
    migrated = await _index_definitions(engine)
    assert any(" WHERE " in definition for definition in migrated.values())
    assert migrated == expected


async def test_the_comparison_would_notice_a_missing_table(database_url: str) -> None:
    # Guards the test above: a schema that differs from the models must produce a difference.
    engine = create_engine_for_url(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE chain_deployments"))
        async with engine.connect() as connection:
            differences = await connection.run_sync(_schema_differences)
    finally:
        await engine.dispose()
    assert [difference[0] for difference in differences] == ["add_table", "add_index"]


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    upgrade_to_head(empty_database_url)  # nothing left to do: a no-op, not an error
    command.downgrade(alembic_config(empty_database_url), "base")

    async def table_names() -> list[str]:
        engine = create_engine_for_url(empty_database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: sorted(inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    assert run_in_thread(table_names()) == ["alembic_version"]
    upgrade_to_head(empty_database_url)
    assert run_in_thread(table_names()) == sorted(["alembic_version", *Base.metadata.tables])


# The revision before audit_log.request_id was widened, which rebuilds the table on SQLite.
_BEFORE_WIDER_REQUEST_IDS = "b6e1d3a70c52"


async def _audit_log_refuses_changes(database_url: str) -> None:
    engine = create_engine_for_url(database_url)
    changes = ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"]
    if engine.dialect.name == "postgresql":
        changes.append("TRUNCATE audit_log")
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO audit_log (occurred_at, actor, action, subject_type, subject_id, "
                    "tx_hashes, request_id) "
                    "VALUES (CURRENT_TIMESTAMP, 'cli:test', 'test.entry', 'test', :subject, '[]', 'r-1')"
                ),
                {"subject": uuid.uuid4().hex},
            )
        for statement in changes:
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as connection:
                    await connection.execute(text(statement))
        async with engine.connect() as connection:
            actors = set((await connection.execute(text("SELECT actor FROM audit_log"))).scalars())
    finally:
        await engine.dispose()
    assert actors == {"cli:test"}


def test_the_audit_log_stays_append_only_when_its_request_ids_are_widened_and_narrowed(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, _BEFORE_WIDER_REQUEST_IDS)
    run_in_thread(_audit_log_refuses_changes(empty_database_url))
    upgrade_to_head(empty_database_url)
    run_in_thread(_audit_log_refuses_changes(empty_database_url))
    command.downgrade(config, _BEFORE_WIDER_REQUEST_IDS)
    run_in_thread(_audit_log_refuses_changes(empty_database_url))


def test_constraint_names_follow_the_naming_convention() -> None:
    table = Base.metadata.tables["chain_deployments"]
    names = {constraint.name for constraint in table.constraints} | {index.name for index in table.indexes}
    assert names == {
        "pk_chain_deployments",
        "uq_chain_deployments_manifest_sha256",
        "ck_chain_deployments_chain_id_positive",
        "ck_chain_deployments_deploy_block_not_negative",
        "ck_chain_deployments_manifest_sha256_length",
        "ix_chain_deployments_chain_id_deploy_block",
    }


# --------------------------------------------------------------------------- engine


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        journal_mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
        foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
        busy_timeout = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
    assert (journal_mode, foreign_keys, busy_timeout) == ("wal", 1, SQLITE_BUSY_TIMEOUT_MS)


async def test_a_savepoint_rollback_keeps_the_outer_transaction(engine: AsyncEngine) -> None:
    # On SQLite this only holds because SQLAlchemy, not the driver, emits BEGIN.
    async with create_sessionmaker(engine)() as session:
        await record_deployment(session, 1, 10, {"n": 1})
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                session.add(
                    ChainDeployment(chain_id=1, deploy_block=11, manifest={}, manifest_sha256="0" * 63)
                )
        await session.commit()
    assert await _row_count(engine) == 1


async def test_a_rolled_back_transaction_leaves_nothing(engine: AsyncEngine) -> None:
    async with create_sessionmaker(engine)() as session:
        await record_deployment(session, 1, 10, MANIFEST)
        await session.rollback()
    assert await _row_count(engine) == 0


# --------------------------------------------------------------------------- deployments repository


async def test_record_deployment_stores_the_manifest(engine: AsyncEngine, session: AsyncSession) -> None:
    before = datetime.now(UTC)
    row = await record_deployment(session, 31337, 4, MANIFEST)
    await session.commit()

    async with create_sessionmaker(engine)() as reader:
        stored = await reader.get(ChainDeployment, row.id)
    assert stored is not None
    assert (stored.chain_id, stored.deploy_block, stored.manifest) == (31337, 4, MANIFEST)
    assert stored.manifest_sha256 == manifest_sha256(MANIFEST)
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    assert before <= stored.created_at <= datetime.now(UTC)


async def test_record_deployment_is_idempotent(engine: AsyncEngine, session: AsyncSession) -> None:
    first = await record_deployment(session, 31337, 4, MANIFEST)
    reordered = dict(reversed(list(MANIFEST.items())))
    second = await record_deployment(session, 31337, 4, reordered)
    await session.commit()
    assert second.id == first.id
    assert await _row_count(engine) == 1


@pytest.mark.parametrize(("chain_id", "deploy_block"), [(1, 4), (31337, 5)])
async def test_the_same_manifest_on_another_chain_or_block_is_a_conflict(
    session: AsyncSession, chain_id: int, deploy_block: int
) -> None:
    first = await record_deployment(session, 31337, 4, MANIFEST)
    with pytest.raises(Conflict) as raised:
        await record_deployment(session, chain_id, deploy_block, MANIFEST)
    assert raised.value.extra["deployment_id"] == first.id


@pytest.mark.parametrize(("chain_id", "deploy_block"), [(0, 1), (-5, 1), (1, -1)])
async def test_record_deployment_rejects_impossible_coordinates(
    session: AsyncSession, chain_id: int, deploy_block: int
) -> None:
    with pytest.raises(ValidationFailed):
        await record_deployment(session, chain_id, deploy_block, MANIFEST)


async def test_latest_deployment_is_the_highest_block_on_that_chain(session: AsyncSession) -> None:
    assert await latest_deployment(session, 31337) is None
    await record_deployment(session, 31337, 9, {"v": 1})
    newest = await record_deployment(session, 31337, 20, {"v": 2})
    await record_deployment(session, 31337, 15, {"v": 3})
    other_chain = await record_deployment(session, 1, 100, {"v": 4})

    assert await latest_deployment(session, 31337) == newest
    assert await latest_deployment(session, 1) == other_chain
    assert await latest_deployment(session, 5) is None


def test_manifest_hash_ignores_key_order_but_not_values() -> None:
    assert manifest_sha256({"a": 1, "b": [1, 2]}) == manifest_sha256({"b": [1, 2], "a": 1})
    assert manifest_sha256({"a": 1}) != manifest_sha256({"a": 2})
    assert manifest_sha256({"a": [1, 2]}) != manifest_sha256({"a": [2, 1]})


@pytest.mark.postgres
@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_concurrent_recording_of_one_manifest_yields_one_row(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as first, sessionmaker() as second:
        winner = await record_deployment(first, 31337, 4, MANIFEST)
        # The second insert blocks on the unique index until the first transaction ends...
        racing = asyncio.create_task(record_deployment(second, 31337, 4, MANIFEST))
        await asyncio.sleep(0.2)
        assert not racing.done()
        await first.commit()
        # ...then fails inside its savepoint and finds the committed row instead.
        loser = await racing
        await second.commit()
    assert loser.id == winner.id
    assert await _row_count(engine) == 1


# --------------------------------------------------------------------------- column types


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1), dialect=None)  # type: ignore[arg-type]  # noqa: DTZ001


def test_aware_datetimes_are_stored_as_utc() -> None:
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    stored = UTCDateTime().process_bind_param(plus_two, dialect=None)  # type: ignore[arg-type]
    assert stored == plus_two
    assert stored is not None
    assert stored.tzinfo == UTC


# --------------------------------------------------------------------------- request transaction


def _deployment_router() -> APIRouter:
    router = APIRouter()

    @router.post("/deployments/{deploy_block}")
    async def create(deploy_block: int, session: DbSession, fail: bool = False) -> dict[str, int]:
        row = await record_deployment(session, 31337, deploy_block, {"block": deploy_block})
        if fail:
            raise Conflict("refused after writing")
        return {"id": row.id}

    return router


async def test_a_successful_request_commits_before_responding(start_app: StartApp) -> None:
    running = await start_app(routers=[_deployment_router()])
    response = await running.client.post("/deployments/7")
    assert response.status_code == 200
    # Read through a separate session: the row is committed, not just flushed.
    async with running.app.state.db_sessionmaker() as reader:
        assert (await latest_deployment(reader, 31337)) is not None


async def test_a_failed_request_rolls_back_its_writes(start_app: StartApp) -> None:
    running = await start_app(routers=[_deployment_router()])
    response = await running.client.post("/deployments/7", params={"fail": "true"})
    assert response.status_code == 409
    async with running.app.state.db_sessionmaker() as reader:
        assert await latest_deployment(reader, 31337) is None

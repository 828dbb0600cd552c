"""Many rows in one statement (exchange.db.bulk) on both databases: the rows written are exactly
the rows given, updates touch exactly the matched rows, and refused values write nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db import bulk
from exchange.trading.models import LedgerBalance, LedgerEntry

ENTRIES = LedgerEntry.__table__
BALANCES = LedgerBalance.__table__
assert isinstance(ENTRIES, Table)
assert isinstance(BALANCES, Table)
UINT256_MAX = 2**256 - 1
WHEN = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
TOKEN = "0x" + "0c" * 20


@pytest.fixture
def session(db_session: AsyncSession) -> AsyncSession:
    return db_session


def entry(index: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "account": "0x" + f"{index:040x}",
        "token": "0x" + "0c" * 20,
        "total_delta": -UINT256_MAX if index % 2 else UINT256_MAX - index,
        "reserved_delta": index - 5,
        "cause": "test",
        "reference": f"ref-{index} with 'quotes' and \"doubles\" and unicode é",
        "created_at": WHEN + timedelta(microseconds=index),
    }
    row.update(changes)
    return row


async def stored_entries(session: AsyncSession) -> dict[int, dict[str, object]]:
    rows = (await session.execute(select(ENTRIES))).mappings().all()
    return {row["id"]: {key: row[key] for key in row if key != "id"} for row in rows}


async def test_insert_rows_writes_exactly_the_rows_and_returns_their_keys(session: AsyncSession) -> None:
    rows = [entry(index) for index in range(300)]
    async with session.begin():
        returned = await bulk.insert_rows(session, ENTRIES, rows, returning=("id", "reference"))
    async with session.begin():
        stored = await stored_entries(session)
    assert len(returned) == len(rows) == len(stored)
    by_reference = {reference: entry_id for entry_id, reference in returned}
    for row in rows:
        assert stored[by_reference[row["reference"]]] == row


async def test_insert_without_returning_and_empty_inputs(session: AsyncSession) -> None:
    async with session.begin():
        assert await bulk.insert_rows(session, ENTRIES, []) == []
        assert await bulk.insert_rows(session, ENTRIES, [entry(1), entry(2)]) == []
        await bulk.update_rows(session, BALANCES, ("account", "token"), [])
    async with session.begin():
        assert sorted(row["reference"] for row in (await stored_entries(session)).values()) == [
            entry(1)["reference"],
            entry(2)["reference"],
        ]


async def test_update_rows_changes_only_the_matched_rows(session: AsyncSession) -> None:
    token = "0x" + "0c" * 20
    balances = [
        {
            "account": "0x" + f"{index:040x}",
            "token": token,
            "total": 1000 + index,
            "reserved": index,
            "updated_at": WHEN,
        }
        for index in range(5)
    ]
    later = WHEN + timedelta(seconds=1)
    async with session.begin():
        await bulk.insert_rows(session, BALANCES, balances)
        await bulk.update_rows(
            session,
            BALANCES,
            ("account", "token"),
            [
                {
                    "account": balances[1]["account"],
                    "token": token,
                    "total": UINT256_MAX,
                    "reserved": 7,
                    "updated_at": later,
                },
                {
                    "account": balances[3]["account"],
                    "token": token,
                    "total": 0,
                    "reserved": 0,
                    "updated_at": later,
                },
                # matches no row: changes nothing, creates nothing
                {"account": "0x" + "ff" * 20, "token": token, "total": 1, "reserved": 1, "updated_at": later},
            ],
        )
    async with session.begin():
        stored = {
            row.account: (row.total, row.reserved, row.updated_at)
            for row in (await session.execute(select(LedgerBalance))).scalars()
        }
    expected = {str(row["account"]): (row["total"], row["reserved"], WHEN) for row in balances}
    expected[str(balances[1]["account"])] = (UINT256_MAX, 7, later)
    expected[str(balances[3]["account"])] = (0, 0, later)
    assert stored == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"total_delta": UINT256_MAX + 1},  # the column type refuses it before anything is sent
        {"created_at": datetime(2026, 1, 1)},  # noqa: DTZ001  (naive: refused by the column type)
    ],
)
async def test_a_refused_value_writes_nothing(session: AsyncSession, bad: dict[str, object]) -> None:
    with pytest.raises(StatementError, match=r"ValueError\) (.* is not a signed amount|naive datetime)"):
        async with session.begin():
            await bulk.insert_rows(session, ENTRIES, [entry(1), entry(2, **bad)])
    async with session.begin():
        assert await stored_entries(session) == {}


async def test_unknown_columns_are_refused(session: AsyncSession) -> None:
    async with session.begin():
        with pytest.raises(KeyError, match="no column"):
            await bulk.insert_rows(session, ENTRIES, [{**entry(1), "colour": "red"}])
        with pytest.raises(KeyError, match="no column"):
            await bulk.insert_rows(session, ENTRIES, [entry(1)], returning=("colour",))


async def raw_of(session: AsyncSession) -> bulk.Raw:
    """The session's asyncpg connection as a bulk target (its owner runs the transaction)."""
    connection = await session.connection()
    return bulk.Raw((await connection.get_raw_connection()).driver_connection, connection.dialect)


def postgres_only(session: AsyncSession) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("an asyncpg connection: PostgreSQL only")


async def test_a_raw_connection_writes_reads_and_updates_like_a_session(session: AsyncSession) -> None:
    postgres_only(session)
    token = "0x" + "0c" * 20
    balances = [
        {"account": "0x" + f"{index:040x}", "token": token, "total": UINT256_MAX - index, "reserved": index}
        for index in range(4)
    ]
    async with session.begin():
        raw = await raw_of(session)
        async with raw.driver.transaction():
            returned = await bulk.insert_rows(
                raw, ENTRIES, [entry(1), entry(2)], returning=("id", "reference")
            )
            await bulk.insert_rows(raw, BALANCES, [{**row, "updated_at": WHEN} for row in balances])
            await bulk.update_rows(
                raw, BALANCES, ("account", "token"), [{**balances[2], "reserved": 9, "updated_at": WHEN}]
            )
            # Read back through the columns' own processing: uint256 text comes back as int.
            read = await bulk.fetch(
                raw,
                "SELECT account, total, reserved FROM ledger_balances ORDER BY account",
                columns=[BALANCES.c.account, BALANCES.c.total, BALANCES.c.reserved],
            )
            assert read == [
                (row["account"], row["total"], 9 if index == 2 else row["reserved"])
                for index, row in enumerate(balances)
            ]
            first = {"account": balances[0]["account"], "token": token}
            nothing = bulk.Writes()  # the last update alone
            written = await bulk.write_all(raw, nothing, BALANCES, {"total": 5, "updated_at": WHEN}, first)
            assert written == bulk.Written(1, {})
            missed = await bulk.write_all(raw, nothing, BALANCES, {"total": 5}, {"account": "0x" + "ff" * 20})
            assert missed.moved == 0
            with pytest.raises(StatementError, match=r"ValueError\) -1 is not a uint256"):
                await bulk.write_all(
                    raw, nothing, BALANCES, {"total": -1}, {"account": balances[1]["account"]}
                )
    async with session.begin():
        stored = await stored_entries(session)
        totals = {row.account: row.total for row in (await session.execute(select(LedgerBalance))).scalars()}
    assert {reference for _, reference in returned} == {entry(1)["reference"], entry(2)["reference"]}
    assert sorted(row["reference"] for row in stored.values()) == [
        entry(1)["reference"],
        entry(2)["reference"],
    ]
    assert totals == {row["account"]: 5 if index == 0 else row["total"] for index, row in enumerate(balances)}


async def test_a_raw_transaction_that_fails_leaves_nothing(session: AsyncSession) -> None:
    postgres_only(session)

    async def abandoned(raw: bulk.Raw) -> None:
        async with raw.driver.transaction():
            await bulk.insert_rows(raw, ENTRIES, [entry(1)])
            raise RuntimeError("abandon the transaction")

    async with session.begin():
        raw = await raw_of(session)
        with pytest.raises(RuntimeError, match="abandon"):
            await abandoned(raw)
    async with session.begin():
        assert await stored_entries(session) == {}


async def test_bulk_statements_first_in_a_session_are_in_its_transaction(session: AsyncSession) -> None:
    # SQLAlchemy's asyncpg adapter begins on the server with its own first statement: rows a
    # bulk statement sent first must still go when the session rolls back.
    await bulk.insert_rows(session, ENTRIES, [entry(1)])
    await session.rollback()
    async with session.begin():
        assert await stored_entries(session) == {}


def gathered_writes(token: str, later: datetime) -> tuple[bulk.Writes, list[dict[str, object]]]:
    """Two balances to update (one matching no row), one to insert, and two ledger entries."""
    existing = [
        {
            "account": "0x" + f"{index:040x}",
            "token": token,
            "total": 1000 + index,
            "reserved": 0,
            "updated_at": WHEN,
        }
        for index in range(3)
    ]
    writes = bulk.Writes()
    writes.update(
        BALANCES,
        ("account", "token"),
        [
            {
                "account": existing[1]["account"],
                "token": token,
                "total": UINT256_MAX,
                "reserved": 7,
                "updated_at": later,
            },
            {"account": "0x" + "ff" * 20, "token": token, "total": 1, "reserved": 1, "updated_at": later},
        ],
    )
    writes.insert(
        BALANCES,
        [{"account": "0x" + "ee" * 20, "token": token, "total": 3, "reserved": 2, "updated_at": later}],
    )
    writes.insert(ENTRIES, [entry(1), entry(2)])
    writes.update(BALANCES, ("account", "token"), [])  # nothing: no part
    writes.insert(ENTRIES, [])
    return writes, existing


async def test_write_all_runs_every_part_then_the_last_update(session: AsyncSession) -> None:
    token = "0x" + "0c" * 20
    later = WHEN + timedelta(seconds=1)
    writes, existing = gathered_writes(token, later)
    assert len(writes.parts) == 3
    first = {"account": existing[0]["account"], "token": token}
    async with session.begin():
        await bulk.insert_rows(session, BALANCES, existing)
        written = await bulk.write_all(session, writes, BALANCES, {"reserved": 5}, {**first, "total": 1000})
        assert written == bulk.Written(1, {})  # no part asked for anything back
        # The last update's match is counted, not the parts' rows: a head that moved matches none.
        missed = await bulk.write_all(
            session, bulk.Writes(), BALANCES, {"reserved": 6}, {**first, "total": 1}
        )
        assert missed.moved == 0
    async with session.begin():
        stored = {
            row.account: (row.total, row.reserved, row.updated_at)
            for row in (await session.execute(select(LedgerBalance))).scalars()
        }
        references = sorted(str(row["reference"]) for row in (await stored_entries(session)).values())
    assert stored == {
        existing[0]["account"]: (1000, 5, WHEN),
        existing[1]["account"]: (UINT256_MAX, 7, later),
        existing[2]["account"]: (1002, 0, WHEN),
        "0x" + "ee" * 20: (3, 2, later),
    }
    assert references == sorted([str(entry(1)["reference"]), str(entry(2)["reference"])])


async def test_write_all_with_a_refused_value_writes_nothing(session: AsyncSession) -> None:
    writes = bulk.Writes()
    writes.insert(ENTRIES, [entry(1)])
    writes.insert(ENTRIES, [entry(2, total_delta=UINT256_MAX + 1)])
    with pytest.raises(StatementError, match=r"is not a signed amount"):
        async with session.begin():
            await bulk.write_all(session, writes, BALANCES, {"reserved": 1}, {"token": "0x" + "0c" * 20})
    async with session.begin():
        assert await stored_entries(session) == {}


async def test_write_all_on_postgresql_is_one_statement(session: AsyncSession) -> None:
    postgres_only(session)
    token = "0x" + "0c" * 20
    writes, existing = gathered_writes(token, WHEN + timedelta(seconds=1))
    sent: list[str] = []
    async with session.begin():
        await bulk.insert_rows(session, BALANCES, existing)
        raw = await raw_of(session)

        def logged(record: object) -> None:
            sent.append(record.query)  # type: ignore[attr-defined]

        raw.driver.add_query_logger(logged)
        try:
            first = {"account": existing[0]["account"], "token": token}
            assert (await bulk.write_all(raw, writes, BALANCES, {"reserved": 5}, first)).moved == 1
        finally:
            raw.driver.remove_query_logger(logged)
    # asyncpg tells its query loggers at the loop's next turn: the commit above awaited past it.
    assert len(sent) == 1
    assert sent[0].startswith("WITH w0 AS (UPDATE")
    assert sent[0].count(" AS (") == 4  # three parts and the last update
    async with session.begin():
        assert len(await stored_entries(session)) == 2
        count = len((await session.execute(select(LedgerBalance))).scalars().all())
    assert count == 4


async def test_write_all_returns_what_a_part_asks_for_with_ids_in_the_rows_order(
    session: AsyncSession,
) -> None:
    # A serial key ascends with the rows given: a writer's fills take ids in the order they traded.
    rows = [entry(100 + index) for index in range(60)]
    writes = bulk.Writes()
    assert writes.insert(ENTRIES, []) is None  # no rows: no part
    part = writes.insert(ENTRIES, rows, returning=("id", "reference"))
    assert part == 0
    async with session.begin():
        written = await bulk.write_all(session, writes, BALANCES, {"reserved": 1}, {"token": TOKEN})
    ids = dict((reference, entry_id) for entry_id, reference in written.returned[part])
    in_order = [ids[row["reference"]] for row in rows]
    assert len(set(in_order)) == len(rows)
    assert in_order == sorted(in_order)

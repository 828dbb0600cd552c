"""Many rows in one statement.

On PostgreSQL, :func:`insert_rows` and :func:`update_rows` send ONE statement
whatever the number of rows: the rows travel as one JSON parameter, which the
statement reads back as typed rows with ``json_to_recordset``. An executemany
sends one statement execution per row, and the database plans, executes and
answers each one; the writer of a market writes hundreds of rows a cycle, so
that was most of its time in the database. (Column arrays through ``unnest``
would do too, but encoding arrays element by element costs the client several
times the CPU of one ``orjson`` document.) Values go through the column types'
own bind processing (the same validation and conversion as any other
statement), and the statements run on the session's connection, inside its
transaction.

Elsewhere (SQLite) both are plain executemany statements through SQLAlchemy.

:func:`write_all` goes further: several such inserts and updates (:class:`Writes`) and a last
update, on PostgreSQL as ONE statement of data-modifying ``WITH`` parts, so that a caller
waiting for each statement in turn waits once.

A caller that runs a whole transaction of such statements on PostgreSQL, and
no ORM, can hand them a :class:`Raw` instead of a session: the asyncpg
connection in its own transaction. That skips a session's cost per statement
(finding its connection, its transaction bookkeeping), and :func:`fetch` and
:func:`write_all` read and write through it the same way, each value through
its column type's processing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

import orjson
from sqlalchemy import Column, Table, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Raw:
    """An asyncpg connection (in a transaction its owner runs) and the dialect of its engine."""

    driver: Any
    dialect: Dialect


Target = AsyncSession | Raw


def table_of(model: type[Any]) -> Table:
    """The Core table of a mapped model, for the statements here."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model maps one table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def _columns(table: Table, names: Sequence[str]) -> list[Column[Any]]:
    unknown = [name for name in names if name not in table.c]
    if unknown:
        raise KeyError(f"{table.name} has no column {', '.join(unknown)}")
    return [table.c[name] for name in names]


@cache
def _processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    return column.type.bind_processor(dialect)


@cache
def _result_processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(dialect).result_processor(dialect, None)


def bind_value(column: Column[Any], dialect: Dialect, value: Any) -> Any:
    """``value`` as ``column``'s type binds it (its validation and conversion)."""
    process = _processor(column, dialect)
    return value if process is None else process(value)


def _payload(columns: Sequence[Column[Any]], rows: Sequence[Row], dialect: Dialect, sql: str) -> str:
    """The rows as one JSON array of objects, each value as its column's type binds it.

    A value its type refuses raises SQLAlchemy's ``StatementError`` (the original error as
    ``orig``), as the same value in any other statement would.
    """
    processors = [(column.key, _processor(column, dialect)) for column in columns]
    try:
        return orjson.dumps(
            [
                {name: row[name] if process is None else process(row[name]) for name, process in processors}
                for row in rows
            ]
        ).decode()
    except (TypeError, ValueError, orjson.JSONEncodeError) as error:
        raise _refused(error, sql) from error


def _refused(error: Exception, sql: str) -> StatementError:
    """``error`` (a value a column type refused) as SQLAlchemy reports it for ``sql``."""
    return StatementError(f"({type(error).__module__}.{type(error).__name__}) {error}", sql, None, error)


@cache
def _recordset(table: Table, names: tuple[str, ...], dialect: Dialect, parameter: int = 1) -> str:
    """``json_to_recordset($1::json) AS v(name type, ...)`` over ``names`` of ``table``
    (the rows in parameter number ``parameter``)."""
    quote = dialect.identifier_preparer.quote
    definitions = ", ".join(f"{quote(name)} {table.c[name].type.compile(dialect=dialect)}" for name in names)
    return f"json_to_recordset(${parameter}::json) AS v({definitions})"


@cache
def _insert_sql(
    table: Table,
    names: tuple[str, ...],
    returning: tuple[str, ...],
    dialect: Dialect,
    parameter: int = 1,
    *,
    skip_existing: bool = False,
) -> str:
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    listed = ", ".join(quote(name) for name in names)
    source = _recordset(table, names, dialect, parameter)
    # Identifiers are the table's own, quoted by the dialect; every value is in the parameter.
    sql = f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {source}"  # noqa: S608
    if skip_existing:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(quote(name) for name in returning)}"
    return sql


@cache
def _update_sql(
    table: Table, keys: tuple[str, ...], values: tuple[str, ...], dialect: Dialect, parameter: int = 1
) -> str:
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    assignments = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in values)
    matches = " AND ".join(f"{target}.{quote(name)} = v.{quote(name)}" for name in keys)
    source = _recordset(table, keys + values, dialect, parameter)
    return f"UPDATE {target} SET {assignments} FROM {source} WHERE {matches}"  # noqa: S608


async def _driver(session: Target) -> Any:
    """The asyncpg connection of a :class:`Raw`, or the one under the session's connection,
    inside the session's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it executes itself, so a
    statement sent to the driver before that would commit on its own. When the session has
    run nothing yet, one trivial statement through SQLAlchemy begins its transaction first.
    """
    if isinstance(session, Raw):
        return session.driver
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


def dialect_of(target: Target) -> Dialect:
    """The SQL dialect of a session or a raw connection."""
    return target.dialect if isinstance(target, Raw) else target.get_bind().dialect


async def fetch(raw: Raw, sql: str, *args: Any, columns: Sequence[Column[Any]]) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (selecting ``columns``, in that order), each value as its column reads it.

    The columns' result processing is asked for without the driver's type code, which text,
    integer, timestamp and binary columns (and types built on them) never need; a numeric
    column would.
    """
    return decoded(raw.dialect, await raw.driver.fetch(sql, *args), columns)


def decoded(
    dialect: Dialect, records: Iterable[Sequence[Any]], columns: Sequence[Column[Any]]
) -> list[tuple[Any, ...]]:
    """Rows the driver gave (``columns``, in that order), each value as its column reads it
    (:func:`fetch`); the records of a row array (``array_agg(ROW(...))``) too."""
    processors = [_result_processor(column, dialect) for column in columns]
    return [
        tuple(
            value if process is None else process(value)
            for value, process in zip(record, processors, strict=True)
        )
        for record in records
    ]


def _update_where_sql(
    table: Table, values: Row, where: Row, dialect: Dialect, first: int
) -> tuple[str, list[Any]]:
    """``UPDATE table SET values WHERE where`` with its parameters numbered from ``first``, and
    the parameters' values as the columns bind them."""
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    pairs = [*values.items(), *where.items()]
    columns = _columns(table, [name for name, _ in pairs])
    assignments = ", ".join(f"{quote(name)} = ${number}" for number, name in enumerate(values, first))
    matches = " AND ".join(
        f"{quote(name)} = ${number}" for number, name in enumerate(where, first + len(values))
    )
    # Identifiers are the table's own, quoted by the dialect; every value is a parameter.
    sql = f"UPDATE {target} SET {assignments} WHERE {matches}"  # noqa: S608
    try:
        parameters = [
            bind_value(column, dialect, value) for column, (_, value) in zip(columns, pairs, strict=True)
        ]
    except (TypeError, ValueError) as error:
        raise _refused(error, sql) from error
    return sql, parameters


async def insert_rows(
    session: Target,
    table: Table,
    rows: Sequence[Row],
    *,
    returning: Sequence[str] = (),
    skip_existing: bool = False,
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (all with the same keys) and return the ``returning`` columns of each, if any.

    Returned values are as the database gives them (no result processing): use them for
    integer keys and the like. The order of the returned rows is not the order of ``rows``.
    ``skip_existing``: a row whose key or unique value a row of the table already has (committed,
    or written by a transaction this one then waits for) is left out, not refused.
    """
    if not rows:
        return []
    names = tuple(rows[0])
    columns = _columns(table, names)
    returned = tuple(returning)
    _columns(table, returned)
    dialect = dialect_of(session)
    if not isinstance(session, Raw) and dialect.name != "postgresql":
        statement = table.insert().prefix_with("OR IGNORE") if skip_existing else table.insert()
        if returned:
            result = await session.execute(statement.returning(*(table.c[n] for n in returned)), list(rows))
            return [tuple(row) for row in result.all()]
        await session.execute(statement, list(rows))
        return []
    sql = _insert_sql(table, names, returned, dialect, skip_existing=skip_existing)
    payload = _payload(columns, rows, dialect, sql)
    driver = await _driver(session)
    if returned:
        return [tuple(record) for record in await driver.fetch(sql, payload)]
    await driver.execute(sql, payload)
    return []


async def update_rows(session: Target, table: Table, keys: Sequence[str], rows: Sequence[Row]) -> None:
    """Update each row of ``table`` matched by ``keys`` to the other values of its entry in ``rows``.

    Every entry has the same keys; a key matching no row changes nothing.
    """
    if not rows:
        return
    key_names = tuple(keys)
    value_names = tuple(name for name in rows[0] if name not in key_names)
    dialect = dialect_of(session)
    if not isinstance(session, Raw) and dialect.name != "postgresql":
        statement = (
            table.update()
            .where(*(table.c[name] == bindparam(f"k_{name}") for name in key_names))
            .values({name: bindparam(name) for name in value_names})
        )
        await session.execute(
            statement,
            [
                {**{f"k_{name}": row[name] for name in key_names}, **{n: row[n] for n in value_names}}
                for row in rows
            ],
        )
        return
    names = key_names + value_names
    columns = _columns(table, names)
    sql = _update_sql(table, key_names, value_names, dialect)
    payload = _payload(columns, rows, dialect, sql)
    driver = await _driver(session)
    await driver.execute(sql, payload)


@dataclass(frozen=True)
class _Part:
    table: Table
    keys: tuple[str, ...]  # the update's match; none for an insert
    rows: Sequence[Row]
    returning: tuple[str, ...] = ()


@dataclass
class Writes:
    """Inserts and updates of many rows, gathered to be sent together by :func:`write_all`.

    None of them may depend on another's effect: on PostgreSQL they and :func:`write_all`'s
    last update run as ONE statement (data-modifying ``WITH`` parts), all on the statement's
    one snapshot, so none sees the rows another writes (the last update must not need them),
    and no row may be written by two parts. Foreign keys are checked when the statement
    ends, after every part.
    """

    parts: list[_Part] = field(default_factory=list)

    def insert(self, table: Table, rows: Sequence[Row], *, returning: Sequence[str] = ()) -> int | None:
        """Insert ``rows`` (all with the same keys), as :func:`insert_rows`; the part's number
        (for :attr:`Written.returned`), or None without rows (no part)."""
        if not rows:
            return None
        self.parts.append(_Part(table, (), rows, tuple(returning)))
        return len(self.parts) - 1

    def update(self, table: Table, keys: Sequence[str], rows: Sequence[Row]) -> None:
        """Update the rows matched by ``keys``, as :func:`update_rows`."""
        if rows:
            self.parts.append(_Part(table, tuple(keys), rows))


@dataclass(frozen=True)
class Written:
    """What :func:`write_all` did: how many rows its last update matched, and the ``returning``
    values of each part that asked for them (by part number; in no particular order)."""

    moved: int
    returned: dict[int, list[tuple[Any, ...]]]


async def write_all(target: Target, writes: Writes, table: Table, values: Row, where: Row) -> Written:
    """Run ``writes``, then set ``values`` on the rows of ``table`` equal to ``where``: how many
    rows that last update matched, and what the parts with ``returning`` returned (:class:`Written`).

    On PostgreSQL that is one statement, one round trip to the database however many parts
    there are: a writer's cycle waits for each of its statements in turn, and on a busy
    machine each wait costs more than the database's work. Elsewhere, each part is its own
    statement (:func:`insert_rows`, :func:`update_rows`), in the order given, and the last update
    follows. A value a column type refuses raises ``StatementError``: on PostgreSQL before
    anything is sent; elsewhere after the parts before it ran, in the transaction its caller
    then rolls back.
    """
    dialect = dialect_of(target)
    if not isinstance(target, Raw) and dialect.name != "postgresql":
        returned: dict[int, list[tuple[Any, ...]]] = {}
        for number, part in enumerate(writes.parts):
            if part.keys:
                await update_rows(target, part.table, part.keys, part.rows)
                continue
            found = await insert_rows(target, part.table, part.rows, returning=part.returning)
            if part.returning:
                returned[number] = found
        result = await target.execute(
            table.update().where(*(table.c[name] == value for name, value in where.items())).values(**values)
        )
        return Written(int(cast(Any, result).rowcount), returned)
    parts: list[str] = []
    payloads: list[Any] = []
    for number in range(len(writes.parts)):
        sql, payload = _part_sql(writes, number, dialect)
        payloads.append(payload)
        parts.append(f"w{number} AS ({sql})")
    last, parameters = _update_where_sql(table, values, where, dialect, len(payloads) + 1)
    parts.append(f"moved AS ({last} RETURNING 1)")
    answers = ["(SELECT count(*) FROM moved)"]
    answered = [number for number, part in enumerate(writes.parts) if part.returning]
    for number in answered:
        listed = ", ".join(dialect.identifier_preparer.quote(name) for name in writes.parts[number].returning)
        answers.append(f"(SELECT array_agg(ROW({listed})) FROM w{number})")  # noqa: S608  (own names)
    sql = f"WITH {', '.join(parts)} SELECT {', '.join(answers)}"
    record = await (await _driver(target)).fetchrow(sql, *payloads, *parameters)
    return Written(
        int(record[0]),
        {number: [tuple(row) for row in record[index] or ()] for index, number in enumerate(answered, 1)},
    )


def _part_sql(writes: Writes, number: int, dialect: Dialect) -> tuple[str, str]:
    """Part ``number`` of ``writes`` as a statement reading its rows from parameter
    ``number + 1``, and that parameter's value."""
    part = writes.parts[number]
    parameter = number + 1
    if part.keys:
        names = part.keys + tuple(name for name in part.rows[0] if name not in part.keys)
        sql = _update_sql(part.table, part.keys, names[len(part.keys) :], dialect, parameter)
        return sql, _payload(_columns(part.table, names), part.rows, dialect, sql)
    names = tuple(part.rows[0])
    sql = _insert_sql(part.table, names, part.returning, dialect, parameter)
    return sql, _payload(_columns(part.table, names), part.rows, dialect, sql)

"""``exchange pool patents import`` and ``exchange pool expire`` on the configured database."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from web3 import Web3

from exchange.db.base import utc_now
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.pool import cli_service
from exchange.pool.cli_service import expire, import_file
from exchange.pool.models import AuditEntry, Member, PatentRecord
from tests.conftest import run_in_thread
from tests.pool_service.flows import admit_in_the_past, days_from_today

HEADER = "publication_number,title,owner,family_id,field,source,contributor,filing_date,grant_date,expires_on"
CONTRIBUTOR = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
EXPIRES = days_from_today(3000).isoformat()


def _row(*fields: str) -> str:
    """One CSV record, quoted where needed (numbers like 'US 10,223,344 B2' contain commas)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


GOOD_ROWS = [
    _row(
        "US 10,223,344 B2",
        "Consensus by ranked voting",
        "Ledger Labs GmbH",
        "F-1",
        "blockchain",
        "purchased",
        "",
        "2014-05-02",
        "2019-03-12",
        EXPIRES,
    ),
    _row(
        "EP3123456B1",
        "Proof of storage, with audits",
        "Chain Research",
        "",
        "ai",
        "contributed",
        CONTRIBUTOR,
        "",
        "",
        EXPIRES,
    ),
    _row(
        "WO 2016/123456 A1",
        "Quantum-safe signatures",
        "BIPF",
        "",
        "quantum",
        "filed",
        "",
        "2016-01-04",
        "",
        EXPIRES,
    ),
    _row("JP2017-123456A", "Gene ledger", "Kyoto Bio KK", "", "gene", "purchased", "", "", "", EXPIRES),
]


def _write(tmp_path: Path, rows: list[str], name: str = "patents.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _counts(database_url: str) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        engine = create_engine_for_url(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                patents = await session.scalar(select(func.count()).select_from(PatentRecord))
                audits = await session.scalar(
                    select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "patent.register")
                )
                return int(patents or 0), int(audits or 0)
        finally:
            await engine.dispose()

    return run_in_thread(count())


def _import_reasons(database_url: str) -> list[str]:
    """The audit log's reasons of the patents registered, as stored."""

    async def read() -> list[str]:
        engine = create_engine_for_url(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                reasons = await session.scalars(
                    select(AuditEntry.reason).where(AuditEntry.action == "patent.register")
                )
                return [str(reason) for reason in reasons]
        finally:
            await engine.dispose()

    return run_in_thread(read())


def _on_the_register(database_url: str, address: str, status: str) -> None:
    """``address`` on the register as indexed (``members``), with ``status``."""

    async def add() -> None:
        engine = create_engine_for_url(database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                session.add(
                    Member(
                        address=address,
                        tier="small",
                        status=status,
                        admitted_at=utc_now(),
                        last_block=1,
                        last_log_index=0,
                        last_tx_hash="0x" + "ab" * 32,
                    )
                )
        finally:
            await engine.dispose()

    run_in_thread(add())


@pytest.fixture(autouse=True)
def _configured_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    _on_the_register(database_url, CONTRIBUTOR, "active")  # a contributed patent's contributor is a member


def test_a_file_with_a_bad_row_imports_nothing_and_names_every_error(
    tmp_path: Path, database_url: str
) -> None:
    rows = [
        GOOD_ROWS[0],
        GOOD_ROWS[1].replace("ai,", "alchemy,"),  # line 3: unknown field
        GOOD_ROWS[2],
        _row(
            "US 10,223,344", "No kind code", "Someone", "", "blockchain", "purchased", "", "", "", EXPIRES
        ),  # line 5
        GOOD_ROWS[3],
        GOOD_ROWS[0],  # line 7: the same patent again
    ]
    out, err = io.StringIO(), io.StringIO()
    assert import_file(_write(tmp_path, rows), actor="tester", out=out, err=err) == 1
    report = err.getvalue()
    assert "line 3 EP3123456B1: field: 'alchemy' is not one of" in report
    assert "line 5 US 10,223,344: publication_number: the ST.16 kind code" in report
    assert "line 7 US 10,223,344 B2: publication_number: US10223344B2 is also on line 2" in report
    assert "3 error(s) in 6 row(s); nothing was imported" in report
    assert "imported" not in out.getvalue()
    assert _counts(database_url) == (0, 0)


def test_every_error_of_every_row_is_reported_with_its_line_and_column(
    tmp_path: Path, database_url: str
) -> None:
    """Not only a row's first error: a row with a bad date that repeats an earlier number is told
    both, a row breaking four rules is told all four, and a refused row whose number is already
    registered is told that too."""
    first = _write(tmp_path, [GOOD_ROWS[3]], "first.csv")
    assert import_file(first, actor="tester", out=io.StringIO(), err=io.StringIO()) == 0
    rows = [
        GOOD_ROWS[0],
        GOOD_ROWS[0].replace(EXPIRES, "2031-02-30"),  # line 3
        _row(
            "EP3123456B1",
            "Proof of storage",
            "",
            "",
            "alchemy",
            "purchased",
            CONTRIBUTOR,
            "2019-01-01",
            "2018-01-01",
            EXPIRES,
        ),  # line 4
        GOOD_ROWS[3].replace("purchased", "donated"),  # line 5
    ]
    path = _write(tmp_path, rows)
    err = io.StringIO()
    assert import_file(path, actor="tester", out=io.StringIO(), err=err) == 1
    reported = [
        line.removeprefix(f"{path}: ") for line in err.getvalue().splitlines() if line.startswith(f"{path}: ")
    ]
    assert reported == [
        "line 3 US 10,223,344 B2: expires_on: '2031-02-30' is not a date (YYYY-MM-DD)",
        "line 3 US 10,223,344 B2: publication_number: US10223344B2 is also on line 2",
        "line 4 EP3123456B1: field: 'alchemy' is not one of: blockchain, ai, big_data, quantum, gene",
        "line 4 EP3123456B1: owner: the owner has 1 to 200 characters",
        "line 4 EP3123456B1: grant_date: the grant date is before the filing date",
        "line 4 EP3123456B1: contributor: a purchased patent has no contributor; the foundation holds it",
        "line 5 JP2017-123456A: source: 'donated' is not one of: contributed, purchased, filed",
        "line 5 JP2017123456A: publication_number: JP2017123456A is already registered",
    ]
    assert "error: 8 error(s) in 4 row(s); nothing was imported" in err.getvalue()
    assert _counts(database_url) == (1, 1)


def test_an_error_after_empty_lines_names_the_line_its_record_is_on(tmp_path: Path) -> None:
    """The reader skips empty lines without a word; the line named is still the record's own."""
    path = tmp_path / "patents.csv"
    bad = GOOD_ROWS[1].replace("ai,", "alchemy,")
    path.write_text("\n".join([HEADER, "", GOOD_ROWS[0], "", "", bad]) + "\n", encoding="utf-8")
    err = io.StringIO()
    assert import_file(path, actor="tester", out=io.StringIO(), err=err) == 1
    assert f"{path}: line 6 EP3123456B1: field: 'alchemy' is not one of" in err.getvalue()


def test_a_contributor_that_is_no_active_member_is_refused(tmp_path: Path, database_url: str) -> None:
    """As the API's registration: patents are contributed by active members of the register."""
    suspended, stranger = "0x" + "5a" * 20, "0x" + "5b" * 20
    _on_the_register(database_url, Web3.to_checksum_address(suspended), "suspended")
    rows = [
        GOOD_ROWS[1],  # line 2: an active member's
        GOOD_ROWS[1].replace("EP3123456B1", "EP3123457B1").replace(CONTRIBUTOR, suspended),
        GOOD_ROWS[1].replace("EP3123456B1", "EP3123458B1").replace(CONTRIBUTOR, stranger),
    ]
    err = io.StringIO()
    assert import_file(_write(tmp_path, rows), actor="tester", out=io.StringIO(), err=err) == 1
    assert [line.split(": ", 1)[1] for line in err.getvalue().splitlines() if "contributor:" in line] == [
        f"line 3 EP3123457B1: contributor: the contributor {Web3.to_checksum_address(suspended)} is a "
        "suspended pool member: patents are contributed by active members",
        f"line 4 EP3123458B1: contributor: the contributor {Web3.to_checksum_address(stranger)} is not a "
        "pool member: patents are contributed by active members",
    ]
    assert "error: 2 error(s) in 3 row(s); nothing was imported" in err.getvalue()
    assert _counts(database_url) == (0, 0)


def test_a_clean_file_imports_every_row_with_progress(tmp_path: Path, database_url: str) -> None:
    path = _write(tmp_path, GOOD_ROWS)
    out, err = io.StringIO(), io.StringIO()
    assert import_file(path, actor="tester", out=out, err=err) == 0, err.getvalue()
    assert out.getvalue().strip() == f"imported 4 patents from {path}"
    assert "validated 4 rows: 0 error(s)" in err.getvalue()
    assert "imported 4/4" in err.getvalue()
    assert _counts(database_url) == (4, 4)

    # Importing it again refuses every row, each with its line.
    again = io.StringIO()
    assert import_file(path, actor="tester", out=io.StringIO(), err=again) == 1
    assert [line for line in again.getvalue().splitlines() if "already registered" in line] == [
        f"{path}: line {line} {number}: publication_number: {number} is already registered"
        for line, number in (
            (2, "US10223344B2"),
            (3, "EP3123456B1"),
            (4, "WO2016123456A1"),
            (5, "JP2017123456A"),
        )
    ]
    assert _counts(database_url) == (4, 4)


def test_a_connection_lost_midway_is_one_line_and_writes_nothing(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a server that ends a session")
    importing = cli_service.import_patents

    async def cut_off_then_import(session: Any, *args: Any, **kwargs: Any) -> Any:
        # The server ends the import's session once it has begun (an operator, a restart).
        pid = await session.scalar(select(func.pg_backend_pid()))
        engine = create_engine_for_url(database_url)
        try:
            async with engine.connect() as other:
                await other.execute(select(func.pg_terminate_backend(pid)))
        finally:
            await engine.dispose()
        return await importing(session, *args, **kwargs)

    monkeypatch.setattr(cli_service, "import_patents", cut_off_then_import)
    out, err = io.StringIO(), io.StringIO()
    assert import_file(_write(tmp_path, GOOD_ROWS), actor="tester", out=out, err=err) == 2
    lines = err.getvalue().strip().splitlines()
    assert lines[-1].startswith("error: lost the database connection: "), err.getvalue()
    assert lines[-1].endswith("nothing was written (the transaction rolled back)")
    assert "Traceback" not in err.getvalue()
    assert out.getvalue() == ""
    assert _counts(database_url) == (0, 0)


def test_text_the_database_cannot_store_is_a_refused_row(tmp_path: Path, database_url: str) -> None:
    """As the API's text fields: a NUL, which PostgreSQL refuses (the import stopped with a
    traceback there) and SQLite stored. (A file read as UTF-8 holds no unpaired surrogate.)"""
    rows = [
        GOOD_ROWS[0],
        _row("EP3123456B1", "Proof\x00of storage", "Chain", "", "ai", "purchased", "", "", "", EXPIRES),
    ]
    err = io.StringIO()
    assert import_file(_write(tmp_path, rows), actor="tester", out=io.StringIO(), err=err) == 1
    assert "line 3 EP3123456B1: title: the text holds a NUL character" in err.getvalue()
    assert _counts(database_url) == (0, 0)


@pytest.mark.parametrize(
    ("actor", "reason"),
    [("a" * 61, "at most 60 characters"), ("tes\x00ter", "NUL character"), (" ", "name who imports")],
    ids=["too-long", "nul", "blank"],
)
def test_an_actor_the_audit_log_cannot_hold_is_refused_first(
    tmp_path: Path, database_url: str, actor: str, reason: str
) -> None:
    err = io.StringIO()
    assert import_file(_write(tmp_path, GOOD_ROWS), actor=actor, out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("error: --actor: ")
    assert reason in err.getvalue()
    assert _counts(database_url) == (0, 0)
    assert import_file(_write(tmp_path, GOOD_ROWS), actor="a" * 60, out=io.StringIO(), err=err) == 0


def test_a_file_name_not_in_utf8_is_recorded_with_its_bytes_escaped(
    tmp_path: Path, database_url: str
) -> None:
    latin1 = tmp_path / os.fsdecode(b"patents-\xe9.csv")
    _write(tmp_path, GOOD_ROWS[:1]).rename(latin1)
    err = io.StringIO()
    assert import_file(latin1, actor="tester", out=io.StringIO(), err=err) == 0, err.getvalue()
    assert _counts(database_url) == (1, 1)
    assert "patents-\\xe9.csv" in _import_reasons(database_url)[0]


def test_a_file_without_the_required_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("number,title\nUS10223344B2,x\n", encoding="utf-8")
    err = io.StringIO()
    assert import_file(path, actor="tester", out=io.StringIO(), err=err) == 1
    assert "line 1: missing column(s) expires_on, field, owner, publication_number, source" in err.getvalue()
    assert "unknown column(s) number" in err.getvalue()


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
def test_the_command_line(tmp_path: Path, database_url: str) -> None:
    # One backend: this is about the command's wiring; the tests above run on both databases.
    command = [
        sys.executable,
        "-m",
        "exchange.cli",
        "pool",
        "patents",
        "import",
        str(_write(tmp_path, GOOD_ROWS)),
    ]
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "imported 4 patents" in done.stdout
    assert "imported 4/4" in done.stderr
    assert _counts(database_url) == (4, 4)


def test_expire_retires_what_lapsed_by_the_given_day(database_url: str) -> None:
    lapsed = run_in_thread(admit_in_the_past(database_url, "US 9,100,001 B1", expires_on=days_from_today(-3)))
    run_in_thread(admit_in_the_past(database_url, "US 9,100,002 B1", expires_on=days_from_today(-1)))
    out = io.StringIO()
    assert expire(days_from_today(-2), out=out, err=io.StringIO()) == 0
    assert out.getvalue().splitlines() == [
        f"retired {lapsed} (expired)",
        f"1 patent(s) retired as of {days_from_today(-2).isoformat()}",
    ]
    out = io.StringIO()
    assert expire(None, out=out, err=io.StringIO()) == 0
    assert out.getvalue().splitlines()[-1] == f"1 patent(s) retired as of {days_from_today(0).isoformat()}"
    err = io.StringIO()
    assert expire(days_from_today(1), out=io.StringIO(), err=err) == 2
    assert "has not come yet" in err.getvalue()

"""Bulk import of patents from CSV: every row validated first, then all imported or none.

The file is UTF-8 (a byte-order mark is ignored) with a header row naming these
columns, in any order (``CSV_COLUMNS``)::

    publication_number,title,owner,family_id,field,source,contributor,filing_date,grant_date,expires_on

``family_id``, ``contributor`` (only for contributed patents), ``filing_date`` and
``grant_date`` may be empty; dates are ISO ``YYYY-MM-DD``.

Rules
-----
* :func:`parse_patents_csv` is pure: it returns the validated rows, or every
  error of every row, each with the line number of the record it is on (the
  header is line 1; a quoted field spanning lines counts its lines) and the
  column it is about. A row is checked in full, not up to its first error: a
  value that cannot be read (a date, a field of technology) skips only the
  rules that need it. A number that appears twice in the file is an error on
  its second line, whatever else is wrong with either row. A record with the
  wrong number of fields is that one error: its values cannot be told apart.
* :func:`import_patents` also refuses numbers already registered and
  contributors that are not active members on the register (as the API's
  registration does), then writes every patent, its first lifecycle event and
  its audit entry in the caller's one transaction — so a bad row means no row
  is written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.kit.errors import ValidationFailed
from exchange.kit.logging import get_logger
from exchange.kit.text import text_refusal
from exchange.pool import repository
from exchange.pool.models import PatentEventRecord, PatentRecord
from exchange.pool.patent_numbers import parse_patent_number
from exchange.pool.patent_service import (
    PatentData,
    contributor_refusal,
    prepare_patent,
    registration_refusals,
)
from exchange.pool.patents import FieldOfTechnology, PatentSource, contributor_address
from exchange.pool.service import record_audit

log = get_logger(__name__)

CSV_COLUMNS: Final = (
    "publication_number",
    "title",
    "owner",
    "family_id",
    "field",
    "source",
    "contributor",
    "filing_date",
    "grant_date",
    "expires_on",
)
REQUIRED_COLUMNS: Final = frozenset({"publication_number", "title", "owner", "field", "source", "expires_on"})
PROGRESS_EVERY: Final = 100

Progress = Callable[[str], None]
_Choice = TypeVar("_Choice", FieldOfTechnology, PatentSource)


@dataclass(frozen=True)
class RowError:
    line: int
    publication_number: str
    reason: str
    column: str | None = None  # None: the error is about the whole record (or the header)

    def __str__(self) -> str:
        number = f" {self.publication_number}" if self.publication_number else ""
        column = f" {self.column}:" if self.column else ""
        return f"line {self.line}{number}:{column} {self.reason}"


@dataclass(frozen=True)
class ParsedRow:
    line: int
    patent: PatentRecord
    event: PatentEventRecord


@dataclass(frozen=True)
class ParsedFile:
    rows: list[ParsedRow]  # the valid rows
    errors: list[RowError]
    row_count: int  # data rows read, valid or not
    first_lines: dict[str, int] = field(default_factory=dict)  # each readable number's first line
    contributors: list[tuple[int, str, str]] = field(default_factory=list)  # line, number, address


class ImportRefused(ValidationFailed):
    """The file has errors; nothing was imported."""

    type_slug = "patent-import-refused"
    title = "Patent import refused"

    def __init__(self, errors: list[RowError], rows: int) -> None:
        super().__init__(
            f"{len(errors)} error(s) in {rows} row(s); nothing was imported",
            extra={"errors": [{"line": e.line, "column": e.column, "reason": e.reason} for e in errors]},
        )
        self.errors = errors


class _Row:
    """One record's values, read column by column; every value that cannot be read is an error."""

    def __init__(self, row: dict[str, str]) -> None:
        self.row = row
        self.errors: list[tuple[str, str]] = []  # (column, reason)
        for column, value in row.items():  # the API's text fields refuse the same (exchange.kit.text)
            refusal = text_refusal(value)
            if refusal is not None:
                self.errors.append((column, refusal))

    def text(self, column: str) -> str:
        return self.row.get(column) or ""

    def optional_date(self, column: str) -> date | None:
        value = self.text(column).strip()
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.errors.append((column, f"{value!r} is not a date (YYYY-MM-DD)"))
            return None

    def choice(self, kind: type[_Choice], column: str) -> _Choice | None:
        value = self.text(column)
        try:
            return kind(value.strip().lower())
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            self.errors.append((column, f"{value!r} is not one of: {allowed}"))
            return None


def _check(row: dict[str, str], *, at: datetime) -> tuple[PatentData | None, list[tuple[str, str]]]:
    """The record as registration data, or None; and every error in it, each with its column."""
    values = _Row(row)
    expires_on = values.optional_date("expires_on")
    if not values.text("expires_on").strip():
        values.errors.append(("expires_on", "required, but empty"))
    field_of_technology = values.choice(FieldOfTechnology, "field")
    source = values.choice(PatentSource, "source")
    publication_number = values.text("publication_number").strip()
    title, owner = values.text("title"), values.text("owner")
    family_id = values.text("family_id").strip() or None
    contributor = values.text("contributor").strip() or None
    filing_date, grant_date = values.optional_date("filing_date"), values.optional_date("grant_date")
    refusals = registration_refusals(
        publication_number=publication_number,
        title=title,
        owner=owner,
        family_id=family_id,
        source=source,
        contributor=contributor,
        filing_date=filing_date,
        grant_date=grant_date,
        expires_on=expires_on,
        at=at,
    )
    errors = values.errors + [(refusal.field, refusal.error.detail) for refusal in refusals]
    if errors or field_of_technology is None or source is None or expires_on is None:
        return None, errors
    data = PatentData(
        publication_number=publication_number,
        title=title,
        owner=owner,
        family_id=family_id,
        field=field_of_technology,
        source=source,
        contributor=contributor,
        filing_date=filing_date,
        grant_date=grant_date,
        expires_on=expires_on,
    )
    return data, []


def _contributor(row: dict[str, str]) -> str | None:
    """The EIP-55 address of a contributed patent's contributor, when the row's source and
    contributor can be read as such; else None."""
    if (row.get("source") or "").strip().lower() != PatentSource.CONTRIBUTED:
        return None
    try:
        address = contributor_address((row.get("contributor") or "").strip())
    except ValidationFailed:
        return None
    return address if int(address, 16) else None


def _patent_id(publication_number: str) -> str | None:
    """The compact number of ``publication_number``, or None when it cannot be read."""
    try:
        return parse_patent_number(publication_number).compact()
    except ValidationFailed:
        return None


class _NumberedLines:
    """The lines of a text, counted as the CSV reader takes them: ``first`` is the number of the
    first line holding anything since it was last cleared, the line a record starts on (the
    reader skips empty lines between records without a word)."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self.number = 0
        self.first: int | None = None

    def next_record(self) -> None:
        """Count the next record's lines from here."""
        self.first = None

    def record_line(self) -> int:
        """The line the record read since :meth:`next_record` starts on."""
        return self.first if self.first is not None else self.number

    def __iter__(self) -> _NumberedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        if self.first is None and line.strip("\r\n"):
            self.first = self.number
        return line


def parse_patents_csv(text: str, *, actor: str, at: datetime, progress: Progress | None = None) -> ParsedFile:
    """Validate every row of ``text``; return the rows ready to insert and every error found."""
    report = progress or (lambda _message: None)
    lines = _NumberedLines(text.removeprefix("\ufeff"))
    reader = csv.DictReader(lines, strict=True)
    errors: list[RowError] = []
    try:
        header = [name.strip() for name in (reader.fieldnames or [])]
    except csv.Error as exc:
        return ParsedFile([], [RowError(1, "", f"unreadable header: {exc}")], 0)
    reader.fieldnames = header
    missing = sorted(REQUIRED_COLUMNS - set(header))
    unknown = sorted(set(header) - set(CSV_COLUMNS))
    if missing or unknown or len(set(header)) != len(header):
        reasons = []
        if missing:
            reasons.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            reasons.append(f"unknown column(s) {', '.join(unknown)}")
        if len(set(header)) != len(header):
            reasons.append("a column appears twice")
        return ParsedFile([], [RowError(1, "", "; ".join(reasons))], 0)

    parsed: list[ParsedRow] = []
    first_line_of: dict[str, int] = {}
    contributors: list[tuple[int, str, str]] = []
    count = 0
    while True:
        lines.next_record()
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(lines.record_line(), "", f"malformed CSV: {exc}"))
            break
        line = lines.record_line()
        count += 1
        number = (row.get("publication_number") or "").strip()
        if None in row or any(value is None for value in row.values()):
            errors.append(RowError(line, number, f"expected {len(header)} fields"))
        else:
            data, row_errors = _check(row, at=at)
            errors += [RowError(line, number, reason, column) for column, reason in row_errors]
            contributor = _contributor(row)
            if contributor is not None:
                contributors.append((line, number, contributor))
            patent_id = _patent_id(number)
            seen = line if patent_id is None else first_line_of.setdefault(patent_id, line)
            if seen != line:
                errors.append(
                    RowError(line, number, f"{patent_id} is also on line {seen}", "publication_number")
                )
            elif data is not None and not row_errors:
                patent, event = prepare_patent(data, actor=actor, at=at)
                parsed.append(ParsedRow(line, patent, event))
        if count % PROGRESS_EVERY == 0:
            report(f"validated {count} rows")
    if count == 0 and not errors:
        errors.append(RowError(1, "", "the file has a header but no rows"))
    report(f"validated {count} rows: {len(errors)} error(s)")
    return ParsedFile(parsed, errors, count, first_line_of, contributors)


async def import_patents(
    session: AsyncSession,
    text: str,
    *,
    actor: str,
    at: datetime,
    source_name: str,
    progress: Progress | None = None,
) -> list[PatentRecord]:
    """Import every patent of the CSV ``text`` in the caller's transaction, or raise ``ImportRefused``."""
    report = progress or (lambda _message: None)
    parsed = parse_patents_csv(text, actor=actor, at=at, progress=report)
    rows, errors = parsed.rows, list(parsed.errors)
    # Every readable number, on its first line: a row refused for another reason is told this too.
    registered = await repository.existing_patent_ids(session, list(parsed.first_lines))
    errors += [
        RowError(line, patent_id, f"{patent_id} is already registered", "publication_number")
        for patent_id, line in parsed.first_lines.items()
        if patent_id in registered
    ]
    statuses = await repository.member_statuses(session, (address for _, _, address in parsed.contributors))
    for line, number, address in parsed.contributors:
        refusal = contributor_refusal(address, statuses.get(address))
        if refusal is not None:
            errors.append(RowError(line, number, refusal, "contributor"))
    if errors:
        errors.sort(key=lambda error: error.line)  # stable: a line's errors stay in the order found
        raise ImportRefused(errors, parsed.row_count)
    for index, row in enumerate(rows, start=1):
        await repository.add_patent(session, row.patent, row.event)
        await record_audit(
            session,
            actor=actor,
            action="patent.register",
            subject_type="patent",
            subject_id=row.patent.patent_id,
            at=at,
            after=row.patent,
            reason=f"imported from {source_name}, line {row.line}",
        )
        if index % PROGRESS_EVERY == 0 or index == len(rows):
            report(f"imported {index}/{len(rows)}")
    await record_audit(
        session,
        actor=actor,
        action="patent.import",
        subject_type="patent_import",
        subject_id=source_name[:128],
        at=at,
        after={"patents": len(rows)},
    )
    log.info("pool.patents_imported", count=len(rows), source=source_name)
    return [row.patent for row in rows]

"""Bulk import of patents from CSV: every row validated first, then all imported or none.

The file is UTF-8 (a byte-order mark is ignored) with a header row naming these
columns, in any order (``CSV_COLUMNS``)::

    publication_number,title,owner,family_id,field,source,contributor,filing_date,grant_date,expires_on

``family_id``, ``contributor`` (only for contributed patents), ``filing_date`` and
``grant_date`` may be empty; dates are ISO ``YYYY-MM-DD``.

Rules
-----
* :func:`parse_patents_csv` is pure: it returns the validated rows, or every
  error with the line number of the record it is on (the header is line 1; a
  quoted field spanning lines counts its lines). A number that appears twice in
  the file is an error on its second line.
* :func:`import_patents` also refuses numbers already registered, then writes
  every patent, its first lifecycle event and its audit entry in the caller's
  one transaction — so a bad row means no row is written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.kit.errors import ValidationFailed
from exchange.kit.logging import get_logger
from exchange.kit.text import text_refusal
from exchange.pool import repository
from exchange.pool.models import PatentEventRecord, PatentRecord
from exchange.pool.patent_service import PatentData, prepare_patent
from exchange.pool.patents import FieldOfTechnology, PatentSource
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

    def __str__(self) -> str:
        number = f" {self.publication_number}" if self.publication_number else ""
        return f"line {self.line}{number}: {self.reason}"


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


class ImportRefused(ValidationFailed):
    """The file has errors; nothing was imported."""

    type_slug = "patent-import-refused"
    title = "Patent import refused"

    def __init__(self, errors: list[RowError], rows: int) -> None:
        super().__init__(
            f"{len(errors)} error(s) in {rows} row(s); nothing was imported",
            extra={"errors": [{"line": e.line, "reason": e.reason} for e in errors]},
        )
        self.errors = errors


def _optional_date(row: dict[str, str], column: str) -> date | None:
    value = (row.get(column) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{column} {value!r} is not a date (YYYY-MM-DD)") from None


def _choice(kind: type[_Choice], column: str, value: str) -> _Choice:
    try:
        return kind(value.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationFailed(f"{column} {value!r} is not one of: {allowed}") from None


def _data(row: dict[str, str]) -> PatentData:
    for column, value in row.items():  # the API's text fields refuse the same (exchange.kit.text)
        refusal = text_refusal(value)
        if refusal is not None:
            raise ValidationFailed(f"{column}: {refusal}")
    expires_on = _optional_date(row, "expires_on")
    if expires_on is None:
        raise ValidationFailed("expires_on is required")
    contributor = (row.get("contributor") or "").strip() or None
    return PatentData(
        publication_number=(row.get("publication_number") or "").strip(),
        title=row.get("title") or "",
        owner=row.get("owner") or "",
        family_id=(row.get("family_id") or "").strip() or None,
        field=_choice(FieldOfTechnology, "field", row.get("field") or ""),
        source=_choice(PatentSource, "source", row.get("source") or ""),
        contributor=contributor,
        filing_date=_optional_date(row, "filing_date"),
        grant_date=_optional_date(row, "grant_date"),
        expires_on=expires_on,
    )


def parse_patents_csv(text: str, *, actor: str, at: datetime, progress: Progress | None = None) -> ParsedFile:
    """Validate every row of ``text``; return the rows ready to insert and every error found."""
    report = progress or (lambda _message: None)
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
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
    line = reader.line_num + 1
    count = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(line, "", f"malformed CSV: {exc}"))
            break
        count += 1
        number = (row.get("publication_number") or "").strip()
        if None in row or any(value is None for value in row.values()):
            errors.append(RowError(line, number, f"expected {len(header)} fields"))
        else:
            try:
                patent, event = prepare_patent(_data(row), actor=actor, at=at)
            except ValidationFailed as exc:
                errors.append(RowError(line, number, exc.detail))
            else:
                seen = first_line_of.setdefault(patent.patent_id, line)
                if seen != line:
                    errors.append(RowError(line, number, f"{patent.patent_id} is also on line {seen}"))
                else:
                    parsed.append(ParsedRow(line, patent, event))
        if count % PROGRESS_EVERY == 0:
            report(f"validated {count} rows")
        line = reader.line_num + 1
    if count == 0 and not errors:
        errors.append(RowError(1, "", "the file has a header but no rows"))
    report(f"validated {count} rows: {len(errors)} error(s)")
    return ParsedFile(parsed, errors, count)


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
    registered = await repository.existing_patent_ids(session, (row.patent.patent_id for row in rows))
    errors += [
        RowError(row.line, row.patent.patent_id, f"{row.patent.patent_id} is already registered")
        for row in rows
        if row.patent.patent_id in registered
    ]
    if errors:
        errors.sort(key=lambda error: error.line)
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

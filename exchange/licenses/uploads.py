"""Reading a manufacturer's device list: every id checked, every refusal located, all or nothing.

Two shapes are accepted:

* JSON: a list whose items are device id strings or ``{"scheme": "gs1", "id": "..."}`` objects.
  A string names its scheme by prefix (``gs1:``, ``imei:``, ``serial:``) unless a default
  scheme is given. Refusals are located by ``item`` (0-based position in the list).
* CSV (UTF-8, a header row first): a ``device_id`` column and an optional ``scheme`` column,
  other columns ignored. Refusals are located by ``line`` (1-based, the header is line 1, as
  an editor numbers them).

Device ``i`` of the batch is the ``i``-th id, in the order given. A device listed twice is
refused at its second occurrence, naming the first. Every error is collected (the first
``MAX_REPORTED_ERRORS`` are reported, with the total), so one upload shows every mistake.
"""

from __future__ import annotations

import csv
import io
import reprlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from exchange.kit.errors import DomainError, ValidationFailed
from exchange.licenses.device_ids import (
    DeviceId,
    DeviceScheme,
    InvalidDeviceId,
    parse_device_id,
    parse_digital_link,
)

MAX_REPORTED_ERRORS: Final = 100


@dataclass(frozen=True, slots=True)
class ListError:
    """Why one entry of the list was refused, and where it is."""

    reason: str
    input: str
    line: int | None = None
    item: int | None = None

    def as_json(self) -> dict[str, object]:
        where: dict[str, object] = {"line": self.line} if self.line is not None else {"item": self.item}
        return {**where, "input": self.input, "reason": self.reason}


class InvalidDeviceList(ValidationFailed):
    """The device list has entries that are not valid, distinct device ids."""

    type_slug = "invalid-device-list"
    title = "Invalid device list"

    def __init__(self, errors: list[ListError], total: int) -> None:
        first = errors[0]
        where = f"line {first.line}" if first.line is not None else f"item {first.item}"
        super().__init__(
            f"{total} invalid entr{'y' if total == 1 else 'ies'}; first at {where}: {first.reason}",
            extra={"error_count": total, "errors": [error.as_json() for error in errors]},
        )
        self.errors = errors
        self.total = total


class TooManyDevices(DomainError):
    status = 413
    type_slug = "too-many-devices"
    title = "Too many devices"


def _parse_one(raw: str, scheme: str | None) -> DeviceId:
    if scheme:
        return parse_device_id(scheme.strip().lower(), raw)
    prefix, colon, _ = raw.strip().partition(":")
    if not colon or prefix not in {member.value for member in DeviceScheme}:
        raise InvalidDeviceId("name the scheme: prefix gs1:, imei: or serial:, or give a scheme", raw)
    return parse_device_id(prefix, raw)


Entry = tuple[str, str | None, int | None, int | None, str | None]
"""(raw text, scheme, line, item, refusal): a refusal is a reason known before parsing."""


def _collect(entries: Iterable[Entry], max_devices: int | None = None) -> list[DeviceId]:
    devices: list[DeviceId] = []
    errors: list[ListError] = []
    total = 0
    first_seen: dict[str, tuple[int | None, int | None]] = {}
    for count, (raw, scheme, line, item, refusal) in enumerate(entries, 1):
        if max_devices is not None and count > max_devices:
            raise _too_many(max_devices)
        try:
            if refusal is not None:
                raise InvalidDeviceId(refusal, raw)
            device = _parse_one(raw, scheme)
        except InvalidDeviceId as exc:
            total += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(ListError(exc.reason, raw[:200], line, item))
            continue
        earlier = first_seen.setdefault(device.canonical, (line, item))
        if earlier != (line, item):
            total += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                place = f"line {earlier[0]}" if earlier[0] is not None else f"item {earlier[1]}"
                errors.append(
                    ListError(f"{device.canonical} is listed twice (first at {place})", raw, line, item)
                )
            continue
        devices.append(device)
    if total:
        raise InvalidDeviceList(errors, total)
    if not devices:
        raise InvalidDeviceList([ListError("the list holds no device", "", item=0)], 1)
    return devices


def _too_many(max_devices: int) -> TooManyDevices:
    return TooManyDevices(f"more than {max_devices} devices in one batch", extra={"limit": max_devices})


def parse_json_list(
    items: object, *, scheme: str | None = None, max_devices: int | None = None
) -> list[DeviceId]:
    """Device ids from a decoded JSON list; raises :class:`InvalidDeviceList`, or
    :class:`TooManyDevices` beyond ``max_devices`` entries (before parsing any)."""
    if not isinstance(items, list):
        raise InvalidDeviceList([ListError("devices must be a JSON list", type(items).__name__, item=0)], 1)
    if max_devices is not None and len(items) > max_devices:
        raise _too_many(max_devices)

    def entries() -> Iterator[Entry]:
        for position, entry in enumerate(items):
            if isinstance(entry, str):
                yield entry, scheme, None, position, None
            elif isinstance(entry, dict) and isinstance(entry.get("id"), str):
                entry_scheme = entry.get("scheme", scheme)
                yield (
                    entry["id"],
                    entry_scheme if isinstance(entry_scheme, str) else None,
                    None,
                    position,
                    None,
                )
            else:
                refusal = 'an entry is a device id string or {"scheme": ..., "id": ...}'
                # reprlib: a refused entry's text costs what its first items do, not all of it.
                yield reprlib.repr(entry)[:200], None, None, position, refusal

    return _collect(entries())


def parse_csv(text: str, *, scheme: str | None = None, max_devices: int | None = None) -> list[DeviceId]:
    """Device ids from CSV text with a header; raises :class:`InvalidDeviceList`, or
    :class:`TooManyDevices` as soon as a row beyond ``max_devices`` is read."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [column.strip().lower() for column in next(reader)]
    except (StopIteration, csv.Error):
        raise InvalidDeviceList([ListError("the CSV has no header row", "", line=1)], 1) from None
    if "device_id" not in header:
        raise InvalidDeviceList(
            [ListError("the header has no device_id column", ",".join(header)[:200], line=1)], 1
        )
    id_column = header.index("device_id")
    scheme_column = header.index("scheme") if "scheme" in header else None

    def entries() -> Iterator[Entry]:
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines, e.g. a trailing newline
                line = reader.line_num
                if id_column >= len(row):
                    yield ",".join(row)[:200], None, line, None, "the row has no device_id cell"
                    continue
                has_scheme = scheme_column is not None and scheme_column < len(row)
                row_scheme = row[scheme_column] if has_scheme and scheme_column is not None else None
                yield row[id_column], row_scheme or scheme, line, None, None
        except csv.Error as exc:
            yield "", None, reader.line_num, None, f"malformed CSV: {exc}"

    return _collect(entries(), max_devices)


def parse_reference(text: str) -> DeviceId:
    """A device named by a Digital Link URI or a scheme-prefixed id (``imei:…``), as queries name it."""
    if text.strip().lower().startswith(("http://", "https://")):
        return parse_digital_link(text)
    return _parse_one(text, None)


def parse_references(items: Sequence[str], positions: Sequence[int] | None = None) -> list[DeviceId]:
    """Every item parsed by :func:`parse_reference` (repeats allowed); refusals located by item.

    `positions` are the items' places in the list the client sent, when `items` are some of them.
    """
    return [
        device for chunk in parse_references_by_chunk(items, positions, len(items) or 1) for device in chunk
    ]


def parse_references_by_chunk(
    items: Sequence[str], positions: Sequence[int] | None, chunk_size: int
) -> Iterator[list[DeviceId]]:
    """:func:`parse_references` `chunk_size` items at a time: the devices of each chunk, parsed when
    it is asked for (those of a list with errors are incomplete), then, if any item is invalid,
    the refusal of the whole list (its first ``MAX_REPORTED_ERRORS`` errors, in order, and the
    total)."""
    errors: list[ListError] = []
    total = 0
    for start in range(0, len(items), chunk_size):
        devices: list[DeviceId] = []
        for position in range(start, min(start + chunk_size, len(items))):
            text = items[position]
            try:
                devices.append(parse_reference(text))
            except InvalidDeviceId as exc:
                total += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    item = position if positions is None else positions[position]
                    errors.append(ListError(exc.reason, text[:200], item=item))
        yield devices
    if total:
        raise InvalidDeviceList(errors, total)

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import ijson

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
        kind = items.kind if isinstance(items, _Shown) else type(items).__name__
        raise InvalidDeviceList([ListError("devices must be a JSON list", kind, item=0)], 1)
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
                yield repr(entry)[:200], None, None, position, refusal

    return _collect(entries())


EVENTS_PER_DEVICE: Final = 8
"""JSON events an upload may hold per device it may list: an object entry takes six
(``{"scheme": …, "id": …}``), a string one."""


class _Shown:
    """A value of an upload that is no device id, kept only to be named in its refusal: a
    container (never built) or a number (as written)."""

    __slots__ = ("kind", "text")

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind  # the type json.loads would have built: "dict", "list", "int", "float"
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _shown(value: object) -> object:
    if isinstance(value, Decimal):  # ijson's numbers: as written, not Decimal('…')
        return _Shown("int" if value == value.to_integral_value() else "float", str(value))
    return value


@dataclass(slots=True)
class JsonUpload:
    """The top level of a JSON device upload, read without building what it does not need.

    ``devices`` is what the ``devices`` key held (None without one): the list of its entries
    (strings, flat objects, scalars; a nested container as a :class:`_Shown`), or whatever
    else it was (an object only named). ``fields`` holds the other keys' values (a container
    again only named).
    """

    devices: object = None
    fields: dict[str, object] = field(default_factory=dict)


class _Events:
    """``ijson.basic_parse`` events, counted: past ``limit`` the body holds more than any
    upload of ``max_devices`` devices could, and reading stops (:class:`TooManyDevices`)."""

    def __init__(self, raw: bytes, limit: int, max_devices: int) -> None:
        self._events = ijson.basic_parse(raw)
        self._left = limit
        self._max_devices = max_devices

    def __iter__(self) -> _Events:
        return self

    def __next__(self) -> tuple[str, object]:
        self._left -= 1
        if self._left < 0:
            raise TooManyDevices(
                f"the body holds more JSON values than an upload of at most {self._max_devices} devices",
                extra={"limit": self._max_devices},
            )
        try:
            event: tuple[str, object] = next(self._events)
        except ijson.JSONError as error:
            said = error.args[0] if error.args else ""
            text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
            reason = text.splitlines()[0] if text.strip() else "malformed"
            raise ValidationFailed(f"the body is not JSON ({reason})") from None
        return event

    def skip(self, opened: str) -> _Shown:
        """Read past the container just ``opened`` (``start_map`` or ``start_array``)."""
        depth = 1
        for event, _ in self:
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
                if depth == 0:
                    break
        return _Shown("dict", "{…}") if opened == "start_map" else _Shown("list", "[…]")


def read_json_upload(raw: bytes, *, max_devices: int) -> JsonUpload:
    """The ``{"devices": [...], …}`` object of a JSON upload, read as a stream of events.

    What a body of that size decodes to with ``json.loads`` can be twenty times its size (a
    list of empty lists), all built before a single entry can be counted. Here nothing is built
    past what an upload of ``max_devices`` devices holds: at most ``max_devices + 1`` entries
    are kept (one more than allowed, for :func:`parse_json_list` to refuse), a device entry is
    kept flat (anything nested in it only named), other keys' containers are read past, and a
    body of more events than ``EVENTS_PER_DEVICE`` per allowed device is refused as it is met.

    Raises ``ValidationFailed`` for a body that is not JSON or not a JSON object, and
    :class:`TooManyDevices`.
    """
    events = _Events(raw, EVENTS_PER_DEVICE * max_devices + 64, max_devices)
    upload = JsonUpload()
    first, _ = next(events)
    if first != "start_map":
        raise ValidationFailed('the body is {"bpc_per_device_wei": "...", "devices": [...]}')
    for event, key in events:
        if event == "end_map":
            break
        event, value = next(events)
        if key == "devices" and event == "start_array":
            upload.devices = _entries(events, max_devices)
        else:
            held = events.skip(event) if event in ("start_map", "start_array") else _shown(value)
            if key == "devices":
                upload.devices = held
            else:
                upload.fields[str(key)] = held
    for _ in events:  # trailing content: ijson refuses it (ValueError)
        pass
    return upload


def _entries(events: _Events, max_devices: int) -> list[object]:
    """The entries of the ``devices`` array just opened, up to one more than ``max_devices``."""
    entries: list[object] = []
    for event, value in events:
        if event == "end_array":
            return entries
        if event == "start_map":
            entry: object = _flat_object(events)
        elif event == "start_array":
            entry = events.skip(event)
        else:
            entry = _shown(value)
        entries.append(entry)
        if len(entries) > max_devices:
            raise _too_many(max_devices)
    return entries


def _flat_object(events: _Events) -> dict[str, object]:
    """The object just opened, its nested containers only named."""
    entry: dict[str, object] = {}
    for event, key in events:
        if event == "end_map":
            break
        event, value = next(events)
        entry[str(key)] = events.skip(event) if event in ("start_map", "start_array") else _shown(value)
    return entry


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

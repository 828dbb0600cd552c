"""A JSON device upload decoded in a process of its own, within a memory limit.

What ``json.loads`` builds from a body can be twenty times its size (a list of empty
lists: three bytes each), or four times its text (a string of characters beyond
U+FFFF), and it builds all of it before one entry can be counted; its C decoder also
holds the interpreter lock throughout, so that decoding a large upload in a thread
stalls the event loop (trading, the WebSocket) for seconds. So the body is decoded
in a worker process, one upload at a time, whose address space is limited
(``DECODE_MEMORY_BYTES`` beyond what the worker holds at start): a body that needs
more is refused (413) there, and the service's own memory never sees it.

The worker hands back only what the upload names, at most one entry more than a
batch may hold: each entry as ``(text, scheme, refusal)``, its text cut to one
character past the longest device id (which the id's check refuses), and the
``bpc_per_device_wei`` string. Turning the entries into device ids (a million take
seconds of Python, which yields the lock) happens back in the service, in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Final

from exchange.kit.errors import DomainError, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.licenses.device_ids import MAX_INPUT_LENGTH
from exchange.licenses.uploads import Entry, InvalidDeviceList, ListError, too_many

log = get_logger(__name__)

DECODE_MEMORY_BYTES: Final = 2 * 1024**3
"""Address space a decoding may add to the worker's: a legitimate upload of a million devices
(at most 256 MiB of ids) decodes in well under a gigabyte."""

_ENTRY_REFUSED: Final = 'an entry is a device id string or {"scheme": ..., "id": ...}'
_SHAPE: Final = 'the body is {"bpc_per_device_wei": "...", "devices": [...]}'


class UploadTooLarge(DomainError):
    status = 413
    type_slug = "upload-too-large"
    title = "Upload too large to decode"


@dataclass(frozen=True, slots=True)
class Decoded:
    """What the worker found: the upload's entries and amount, or why it refused the body."""

    entries: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    amount: str | None = None
    refusal: tuple[str, str] | None = None  # (kind, detail): see ``_refusal``


def decode(raw: bytes, scheme_query: str | None, amount_query: str | None, max_devices: int) -> Decoded:
    """In the worker: the body decoded and flattened (see the module docstring)."""
    try:
        body = json.loads(raw)
    except MemoryError:
        return Decoded(refusal=("too_large", ""))
    except (ValueError, RecursionError):
        return Decoded(refusal=("validation", "the body is not JSON, or nests too deeply"))
    try:
        return _flatten(body, scheme_query, amount_query, max_devices)
    except MemoryError:
        return Decoded(refusal=("too_large", ""))


def _flatten(body: object, scheme_query: str | None, amount_query: str | None, max_devices: int) -> Decoded:
    if not isinstance(body, dict) or "devices" not in body:
        return Decoded(refusal=("validation", _SHAPE))
    items = body["devices"]
    if not isinstance(items, list):
        return Decoded(refusal=("not_a_list", type(items).__name__))
    if len(items) > max_devices:
        return Decoded(refusal=("too_many", str(max_devices)))
    default = body.get("scheme", scheme_query)
    default = default if isinstance(default, str) else None
    amount = body.get("bpc_per_device_wei", amount_query)
    cut = MAX_INPUT_LENGTH + 1
    entries: list[tuple[str, str | None, str | None]] = []
    for entry in items:
        if isinstance(entry, str):
            entries.append((entry[:cut], default, None))
        elif isinstance(entry, dict) and isinstance(entry.get("id"), str):
            scheme = entry.get("scheme", default)
            entries.append((entry["id"][:cut], scheme if isinstance(scheme, str) else None, None))
        else:
            entries.append((repr(entry)[:200], None, _ENTRY_REFUSED))
    return Decoded(entries=entries, amount=amount if isinstance(amount, str) else None)


def entries_of(decoded: Decoded, max_devices: int) -> list[Entry]:
    """The decoded upload's entries for ``uploads.collect``, or its refusal raised."""
    if decoded.refusal is not None:
        raise _refusal(*decoded.refusal, max_devices=max_devices)
    return [
        (text, scheme, None, item, refusal) for item, (text, scheme, refusal) in enumerate(decoded.entries)
    ]


def _refusal(kind: str, detail: str, *, max_devices: int) -> DomainError:
    if kind == "too_many":
        return too_many(max_devices)
    if kind == "not_a_list":
        return InvalidDeviceList([ListError("devices must be a JSON list", detail, item=0)], 1)
    if kind == "too_large":
        return UploadTooLarge(
            "decoding the body would take more memory than one upload is allowed "
            f"({DECODE_MEMORY_BYTES // 1024**2} MiB): send fewer devices, or a CSV"
        )
    return ValidationFailed(detail)


# --------------------------------------------------------------------------- the worker


def _limit_memory(limit: int) -> None:
    """In the worker, once: its address space capped at what it holds now plus ``limit``."""
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (held + limit, held + limit))
    except (ImportError, OSError, StopIteration, ValueError):  # no such limit here: decode unbounded
        pass


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker() -> ProcessPoolExecutor:
    """The process-wide worker (started on first use: spawned, as this process runs threads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_limit_memory,
                initargs=(DECODE_MEMORY_BYTES,),
            )
        return _pool


def _discard(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is broken:
            _pool = None
    with contextlib.suppress(Exception):
        broken.shutdown(wait=False, cancel_futures=True)


async def decode_upload(
    raw: bytes, *, scheme_query: str | None, amount_query: str | None, max_devices: int
) -> Decoded:
    """The body decoded by the worker; one upload at a time, the others queued behind it."""
    pool = _worker()
    try:
        return await asyncio.get_running_loop().run_in_executor(
            pool, decode, raw, scheme_query, amount_query, max_devices
        )
    except BrokenProcessPool:  # the worker died (killed for its memory, say): the next starts anew
        log.warning("licences.upload_decoder_died", body_bytes=len(raw))
        _discard(pool)
        return Decoded(refusal=("too_large", ""))

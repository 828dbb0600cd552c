"""Failed-fill notices on PostgreSQL: sent on commit only, heard in order, and heard again after the
listening connection dies, whether it is cut or goes silent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.trading.fill_notices import FillNoticeListener, announce_failed


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL notifications")
    return database_url


class Proxy:
    """A TCP relay to the database that can go silent: it keeps its connections open and drops
    what they send, as a dead network path does that sends no reset. A connection opened while
    it is silent waits until it speaks again, as a connection attempt does that is retried."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._speaking = asyncio.Event()
        self._speaking.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def silent(self) -> bool:
        return not self._speaking.is_set()

    @silent.setter
    def silent(self, silent: bool) -> None:
        if silent:
            self._speaking.clear()
        else:
            self._speaking.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self._speaking.wait()
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers.append(upstream_writer)
        await asyncio.gather(
            self._relay(reader, upstream_writer), self._relay(upstream_reader, writer), return_exceptions=True
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.silent:
                    writer.write(data)
                    await writer.drain()
        writer.close()


async def _notify(database_url: str, fill_ids: list[int], *, commit: bool) -> None:
    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await session.begin()
            for fill_id in fill_ids:
                await announce_failed(session, fill_id)
            await (session.commit() if commit else session.rollback())
    finally:
        await engine.dispose()


async def _heard(heard: list[int], count: int) -> list[int]:
    for _ in range(500):
        if len(heard) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # and nothing more arrives
    return heard


@pytest.fixture
async def listener_on(postgres_url: str) -> AsyncIterator[tuple[FillNoticeListener, list[int]]]:
    heard: list[int] = []

    async def on_failed(fill_id: int) -> None:
        heard.append(fill_id)

    engine = create_engine_for_url(postgres_url)
    listener = FillNoticeListener(engine, on_failed)
    await listener.start()
    try:
        yield listener, heard
    finally:
        await listener.stop()
        await engine.dispose()


async def test_notices_are_sent_on_commit_only_and_heard_in_order(
    postgres_url: str, listener_on: tuple[FillNoticeListener, list[int]]
) -> None:
    listener, heard = listener_on
    assert listener.listening.is_set()
    await _notify(postgres_url, [11, 12], commit=False)
    await _notify(postgres_url, [13, 14, 15], commit=True)
    assert await _heard(heard, 3) == [13, 14, 15]


async def test_a_listening_connection_that_goes_silent_is_found_and_replaced(postgres_url: str) -> None:
    url = make_url(postgres_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    heard: list[int] = []

    async def on_failed(fill_id: int) -> None:
        heard.append(fill_id)

    via_proxy = url.set(host="127.0.0.1", port=proxy.port)
    engine = create_engine_for_url(via_proxy.render_as_string(hide_password=False))
    # Reopened 2 s after the loss at the earliest; a connection opened earlier waits for the relay.
    listener = FillNoticeListener(
        engine, on_failed, probe_every_s=0.2, probe_timeout_s=0.5, first_retry_s=2.0
    )
    try:
        await listener.start()
        assert listener.listening.is_set()
        await _notify(postgres_url, [21], commit=True)
        assert await _heard(heard, 1) == [21]

        proxy.silent = True  # no reset, no data: only the probe can tell
        for _ in range(300):
            if not listener.listening.is_set():
                break
            await asyncio.sleep(0.01)
        assert not listener.listening.is_set(), "the silent connection was not noticed"
        # Sent while nobody listens, with no failure recorded to read back: never heard.
        await _notify(postgres_url, [22], commit=True)

        proxy.silent = False
        await asyncio.wait_for(listener.listening.wait(), 10)
        await _notify(postgres_url, [23], commit=True)
        assert await _heard(heard, 2) == [21, 23]
    finally:
        await listener.stop()
        await engine.dispose()
        await proxy.stop()

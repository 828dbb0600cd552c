"""Shared fixtures: databases on SQLite and PostgreSQL, the app and an HTTP client.

Databases
    ``database_url`` is parametrized over ``sqlite`` and ``postgresql`` and gives
    each test its own freshly migrated, empty database: a copy of a SQLite file,
    or a PostgreSQL database cloned from a migrated template (``CREATE DATABASE
    ... TEMPLATE``), both built once per session. ``empty_database_url`` is the
    same without migrations. The PostgreSQL variant is marked ``postgres``.

PostgreSQL server, in order of preference
    1. ``TEST_DATABASE_URL``: a database on a server where the user may create
       databases (the fixtures create and drop their own, never touching that one);
    2. a throwaway cluster: ``initdb`` on PATH or under ``/usr/lib/postgresql/*/bin``,
       started on a free loopback port in a temporary directory, deleted at the end;
    3. neither: PostgreSQL tests are skipped, or fail when ``REQUIRE_POSTGRES=1``
       (CI sets it, so a missing server can never pass as green).

App
    ``app`` is ``create_app(settings)`` with its lifespan running; ``client`` is an
    httpx client talking to it in-process. ``start_app(routers=..., lifespan_hooks=...)``
    builds and starts further apps (stopped after the test).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import hypothesis
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from exchange.api.app import LifespanHook, create_app
from exchange.chain.runtime import ChainRuntime, start_chain
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.db.migrate import upgrade_to_head
from exchange.kit.logging import configure_logging
from exchange.main import build_app
from exchange.settings import ENV_PREFIX, FIXED_NAME_VARIABLES, Settings, get_settings, normalize_database_url

# No timing in the property tests' verdicts: the suite runs in parallel processes on a small
# machine, where an example (or drawing one) can take seconds while the other process works.
hypothesis.settings.register_profile(
    "suite", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("suite")

POSTGRES_BIN_GLOBS = ("/usr/lib/postgresql/*/bin",)
POSTGRES_USER = "exchange"
_T = TypeVar("_T")


def run_in_thread(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to completion on its own loop in a worker thread.

    Synchronous fixtures use this, so that they never touch the event loop
    pytest-asyncio runs the tests on.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# --------------------------------------------------------------------------- environment


@pytest.fixture(autouse=True, scope="session")
def _service_logging() -> None:
    """Log as the service does (console format, INFO). Left unconfigured, structlog renders
    every level and, with each logged exception, every frame's local variables: seconds per
    error when the frames hold an app, web3 or a book."""
    configure_logging(log_format="console", log_level="INFO")


@pytest.fixture(autouse=True)
def _isolated_settings_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's EXCHANGE_*, DATABASE_URL or CHAIN_RPC_URL, or a cached Settings."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) or name in FIXED_NAME_VARIABLES.values():
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --------------------------------------------------------------------------- PostgreSQL server


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    maintenance_url: str  # asyncpg URL of a database to run CREATE/DROP DATABASE from

    def url_for(self, database: str) -> str:
        return make_url(self.maintenance_url).set(database=database).render_as_string(hide_password=False)

    async def _execute(self, *statements: str) -> None:
        engine = create_async_engine(self.maintenance_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                for statement in statements:
                    await connection.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    def create_database(self, name: str, *, template: str | None = None) -> None:
        clause = f' TEMPLATE "{template}"' if template else ""
        run_in_thread(self._execute(f'CREATE DATABASE "{name}"{clause}'))

    def drop_database(self, name: str) -> None:
        run_in_thread(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", path))


def find_postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: from PATH, else the newest conventional install."""
    candidates: list[Path] = []
    initdb_on_path = shutil.which("initdb")
    if initdb_on_path:
        candidates.append(Path(initdb_on_path).resolve().parent)
    for pattern in POSTGRES_BIN_GLOBS:
        candidates.extend(Path(found) for found in sorted(glob.glob(pattern), key=_version_key, reverse=True))
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _unprivileged_account() -> pwd.struct_passwd:
    """PostgreSQL refuses to run as root; as root, run it as ``postgres`` or ``nobody``."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and found neither a 'postgres' nor a 'nobody' account for PostgreSQL")


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def throwaway_postgres_cluster(bin_dir: Path) -> Iterator[str]:
    """Start a private PostgreSQL cluster; yield the URL of its ``postgres`` database; delete it."""
    base = Path(tempfile.mkdtemp(prefix="exchange-test-postgres-"))
    account = _unprivileged_account() if os.geteuid() == 0 else None
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)
    data, log_file = base / "data", base / "server.log"

    def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in argv],
            cwd=base,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            env={**os.environ, "LC_ALL": "C"},
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    started = False
    try:
        run(bin_dir / "initdb", "-D", data, "-U", POSTGRES_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        port: int | None = None
        failures: list[str] = []
        for _attempt in range(3):  # another process may take the port between probe and bind
            candidate = _free_loopback_port()
            options = (
                f"-p {candidate} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            result = run(
                bin_dir / "pg_ctl", "-D", data, "-l", log_file, "-o", options, "-w", "start", check=False
            )
            if result.returncode == 0:
                port = candidate
                break
            failures.append(result.stderr)
        if port is None:
            server_log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {failures}\n{server_log}")
        started = True
        yield f"postgresql+asyncpg://{POSTGRES_USER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield PostgresServer(normalize_database_url(configured))
        return
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        reason = (
            "no PostgreSQL: set TEST_DATABASE_URL, or install the server binaries "
            "(initdb on PATH or under /usr/lib/postgresql/*/bin)"
        )
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    with throwaway_postgres_cluster(bin_dir) as url:
        yield PostgresServer(url)


def _unique_database_name(kind: str) -> str:
    return f"exchange_{kind}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    """Name of a database with all migrations applied, to clone per test."""
    name = _unique_database_name("template")
    postgres_server.create_database(name)
    try:
        upgrade_to_head(postgres_server.url_for(name))
        yield name
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy per test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    # The engine is disposed: the last connection checkpointed the WAL into the main file.
    assert not Path(f"{path}-wal").exists(), "SQLite template still has a write-ahead log"
    return path


# --------------------------------------------------------------------------- per-test databases

DATABASE_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=DATABASE_BACKENDS)
def database_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def _database(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, *, migrated: bool
) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path / f"{'migrated' if migrated else 'empty'}-{uuid.uuid4().hex[:8]}.sqlite3"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template: str | None = request.getfixturevalue("postgres_template") if migrated else None
    name = _unique_database_name("test")
    server.create_database(name, template=template)
    try:
        yield server.url_for(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, database_backend: str) -> Iterator[str]:
    """A migrated, empty database of its own for this test, on each backend in turn."""
    yield from _database(request, tmp_path, database_backend, migrated=True)


@pytest.fixture
async def db_session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on ``database_url`` (no transaction begun), its engine disposed afterwards."""
    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on ``database_url`` through an engine of their own, disposed afterwards."""
    engine = create_engine_for_url(database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, database_backend: str
) -> Iterator[str]:
    """A database with no tables at all (not even Alembic's), on each backend in turn."""
    yield from _database(request, tmp_path, database_backend, migrated=False)


@pytest.fixture
def sqlite_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database, for tests that are about something other than the database."""
    yield from _database(request, tmp_path, "sqlite", migrated=True)


# --------------------------------------------------------------------------- app and client


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, log_format="console")


@dataclass(frozen=True)
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient


class StartApp(Protocol):
    def __call__(
        self,
        *,
        routers: Sequence[APIRouter] = (),
        lifespan_hooks: Sequence[LifespanHook] = (),
        settings: Settings | None = None,
    ) -> Awaitable[RunningApp]: ...


@pytest.fixture
async def start_app(settings: Settings) -> AsyncIterator[StartApp]:
    """Build an app, run its lifespan and give it a client; everything stops after the test."""
    default_settings = settings
    async with AsyncExitStack() as stack:

        async def start(
            *,
            routers: Sequence[APIRouter] = (),
            lifespan_hooks: Sequence[LifespanHook] = (),
            settings: Settings | None = None,
        ) -> RunningApp:
            app = create_app(settings or default_settings, routers=routers, lifespan_hooks=lifespan_hooks)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            )
            return RunningApp(app=app, client=client)

        yield start


@pytest.fixture
async def running_app(start_app: StartApp) -> RunningApp:
    return await start_app()


@pytest.fixture
def app(running_app: RunningApp) -> FastAPI:
    return running_app.app


@pytest.fixture
def client(running_app: RunningApp) -> httpx.AsyncClient:
    return running_app.client


# --------------------------------------------------------------------------- the whole service


@pytest.fixture(scope="session")
def embedded_runtime() -> ChainRuntime:
    """One embedded chain with the pool deployed, shared by the session's service tests."""
    return start_chain(None)


@pytest.fixture
def chain_runtime(embedded_runtime: ChainRuntime) -> Iterator[ChainRuntime]:
    """The shared embedded chain, with every test's transactions reverted afterwards."""
    provider = embedded_runtime.w3.provider
    snapshot = provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield embedded_runtime
    finally:
        provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


@pytest.fixture
async def service(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[httpx.AsyncClient]:
    """The whole service (``exchange.main.build_app``) on the test database and the shared chain."""
    app = build_app(settings, chain=chain_runtime)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client

"""A database belongs to one chain: another chain, even at the same addresses, is refused at start;
the embedded defaults begin each start on a new database, keeping the previous one once."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from exchange import main
from exchange.api.app import create_app
from exchange.chain.errors import ChainReplaced
from exchange.chain.lifespan import chain_startup, check_chain_anchor
from exchange.chain.runtime import ChainRuntime, start_chain
from exchange.db.models import ChainAnchor
from exchange.main import (
    DatabaseInUse,
    DatabaseUnwritable,
    claim_embedded_database,
    set_aside_embedded_database,
)
from exchange.settings import Settings
from tests.chain.nodes import free_port


async def _start(settings: Settings, runtime: ChainRuntime) -> None:
    app = create_app(settings, lifespan_hooks=[chain_startup(runtime)])
    async with app.router.lifespan_context(app):
        pass


async def test_a_database_refuses_a_chain_that_replaced_its_own(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    await _start(settings, chain_runtime)
    await _start(settings, chain_runtime)  # the same chain again: it starts

    replacement = start_chain(None)  # a new embedded chain: same id, same addresses, other blocks
    assert replacement.deployment.address("Vault") == chain_runtime.deployment.address("Vault")
    assert replacement.deployment.chain_id == chain_runtime.deployment.chain_id
    with pytest.raises(ChainReplaced, match="start on a new database"):
        await _start(settings, replacement)

    app = create_app(settings)
    async with app.router.lifespan_context(app), app.state.db_sessionmaker() as session:
        (anchor,) = (await session.scalars(select(ChainAnchor))).all()
    w3 = chain_runtime.w3
    deploy_block = chain_runtime.deployment.deploy_block
    assert anchor.block_hash == "0x" + bytes(w3.eth.get_block(deploy_block)["hash"]).hex()


async def test_a_deploy_block_the_node_does_not_have_is_another_chain(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    """A development node restarted keeps its chain id and starts over below the pool's deploy
    block: the block is not found, which says the same as another hash there."""
    beyond = chain_runtime.w3.eth.block_number + 1_000
    restarted = replace(chain_runtime, deployment=replace(chain_runtime.deployment, deploy_block=beyond))
    app = create_app(settings)
    async with app.router.lifespan_context(app), app.state.db_sessionmaker() as session:
        for record in (True, False):
            with pytest.raises(
                ChainReplaced, match=f"deployed in block {beyond} .* which this node does not have"
            ):
                await check_chain_anchor(session, restarted, record=record)


async def test_serve_refuses_a_database_of_another_chain_in_one_line_and_exit_2(
    chain_runtime: ChainRuntime, tmp_path: Path
) -> None:
    """``exchange serve`` on a database another chain's service wrote: the lifespan's
    ``ChainReplaced`` is said in its one line, not as uvicorn's traceback, and the exit is 2."""
    database = tmp_path / "exchange.sqlite3"
    await _start(Settings(database_url=f"sqlite:///{database}"), chain_runtime)  # the shared chain's
    environment = {name: value for name, value in os.environ.items() if name != "CHAIN_RPC_URL"}
    environment.update(DATABASE_URL=f"sqlite:///{database}", EXCHANGE_PORT=str(free_port()))
    started = await asyncio.to_thread(
        subprocess.run,  # on a new embedded chain of its own
        [sys.executable, "-m", "exchange.cli", "serve"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2, started.stderr
    assert "Traceback" not in started.stderr
    (line,) = [line for line in started.stderr.splitlines() if line.startswith("error:")]
    assert "start on a new database" in line


def _database(path: Path, *, anchored: bool) -> None:
    """A SQLite database as a run left it: with the chain it ran on recorded, or without."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE patents (number TEXT)")
        if anchored:
            connection.execute("CREATE TABLE chain_anchor (id INTEGER, block_hash TEXT)")
            connection.execute("INSERT INTO chain_anchor VALUES (1, '0xab')")
        connection.commit()


@pytest.fixture(autouse=True)
def _release_run_locks() -> Iterator[None]:
    """The run lock a test's start took is let go with the test (a process holds it until it ends)."""
    yield
    while main._HELD_LOCKS:
        main._HELD_LOCKS.pop().close()


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a database left by an earlier run on the embedded defaults."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "CHAIN_RPC_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "var").mkdir()
    _database(tmp_path / "var" / "exchange.sqlite3", anchored=True)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "var" / f"exchange.sqlite3{suffix}").write_bytes(b"")
    (tmp_path / "var" / "exchange.sqlite3.previous").write_text("the run before")
    return tmp_path


def test_the_embedded_defaults_set_the_last_runs_database_aside(project_dir: Path) -> None:
    var = project_dir / "var"
    moved = set_aside_embedded_database(Settings())
    assert moved == var / "exchange.sqlite3.previous"
    assert sorted(path.name for path in var.iterdir()) == [
        "exchange.sqlite3.lock",
        "exchange.sqlite3.previous",
        "exchange.sqlite3.previous-shm",
        "exchange.sqlite3.previous-wal",
    ]
    with contextlib.closing(sqlite3.connect(var / "exchange.sqlite3.previous")) as kept:
        assert kept.execute("SELECT id FROM chain_anchor").fetchall() == [(1,)]
    assert set_aside_embedded_database(Settings()) is None  # nothing left to move


def test_a_last_run_that_cannot_be_set_aside_is_refused_and_left_as_it_was(project_dir: Path) -> None:
    var = project_dir / "var"
    (var / "exchange.sqlite3.previous").unlink()
    (var / "exchange.sqlite3.previous" / "kept").mkdir(parents=True)  # a directory in the way
    with pytest.raises(DatabaseUnwritable, match="cannot set the last run's database aside as "):
        claim_embedded_database(Settings())
    assert (var / "exchange.sqlite3").is_file()
    assert (var / "exchange.sqlite3.previous" / "kept").is_dir()


def test_a_last_run_whose_files_cannot_all_move_stays_whole_under_its_name(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    var = project_dir / "var"
    rename = Path.rename

    def refusing(self: Path, target: Any) -> Path:
        if self.name.endswith("-wal"):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", refusing)
    with pytest.raises(DatabaseUnwritable, match=r"Invalid cross-device link \(.*exchange\.sqlite3-wal\)"):
        claim_embedded_database(Settings())
    assert sorted(path.name for path in var.iterdir()) == [
        "exchange.sqlite3",
        "exchange.sqlite3-shm",
        "exchange.sqlite3-wal",
        "exchange.sqlite3.lock",
    ]


def test_a_database_no_service_started_on_is_kept(project_dir: Path) -> None:
    database = project_dir / "var" / "exchange.sqlite3"
    database.unlink()
    _database(database, anchored=False)  # patents imported from the command line, say
    assert set_aside_embedded_database(Settings()) is None
    assert database.is_file()


def test_a_database_another_process_serves_from_is_kept(project_dir: Path) -> None:
    database = project_dir / "var" / "exchange.sqlite3"
    with (project_dir / "var" / "exchange.sqlite3.lock").open("a") as running:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running service holds it
        assert set_aside_embedded_database(Settings()) is None
    assert database.is_file()


@pytest.mark.parametrize(
    "configured",
    [
        {"DATABASE_URL": "sqlite:///var/exchange.sqlite3"},  # the same file, but chosen
        # a chain that outlives the process
        {"CHAIN_RPC_URL": "http://127.0.0.1:8545", "EXCHANGE_DEV_ACCOUNTS": "true"},
    ],
)
def test_a_configured_database_or_chain_keeps_the_database(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, configured: dict[str, str]
) -> None:
    for name, value in configured.items():
        monkeypatch.setenv(name, value)
    assert set_aside_embedded_database(Settings()) is None
    assert (project_dir / "var" / "exchange.sqlite3").is_file()


def test_a_configured_sqlite_database_another_service_serves_from_is_refused(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services on one SQLite file would each write its market (two books of one journal):
    the lock the embedded defaults take is taken on a configured file too."""
    monkeypatch.setenv("DATABASE_URL", "sqlite:///var/exchange.sqlite3")
    with (project_dir / "var" / "exchange.sqlite3.lock").open("a") as running:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running service holds it
        with pytest.raises(DatabaseInUse, match="another process is already serving from"):
            claim_embedded_database(Settings())
    assert (project_dir / "var" / "exchange.sqlite3").is_file()  # configured: never moved


def test_a_second_serve_on_one_sqlite_file_exits_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "exchange.sqlite3"
    lock = database.with_name(database.name + ".lock")
    with lock.open("a") as running:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_") and k != "DATABASE_URL"}
        done = subprocess.run(
            [sys.executable, "-m", "exchange.cli", "serve", "--port", "9"],
            env={**env, "DATABASE_URL": f"sqlite:///{database}"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: another process is already serving from {database}")
    )

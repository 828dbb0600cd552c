"""A throwaway PostgreSQL cluster for benchmarks: ``initdb`` in a temporary directory, a free loopback
port, deleted at the end. Uses ``BENCH_DATABASE_URL`` instead when set (a database the benchmark may
fill and leave behind)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(path) for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise RuntimeError(
        "no PostgreSQL server binaries (initdb, pg_ctl): install them or set BENCH_DATABASE_URL"
    )


@contextmanager
def postgres_url(*, durable: bool = False) -> Iterator[str]:
    """The asyncpg URL of an empty database on a private server, removed afterwards.

    ``durable`` keeps PostgreSQL's durability at its defaults (fsync, synchronous commit,
    full-page writes); otherwise they are off, for benchmarks that do not measure commits.
    Either way new WAL files are not filled with zeros first (``wal_init_zero=off``): a
    server that has run a while recycles its old WAL files, but a new cluster has none, and
    writing and syncing 16 MB of zeros for each new file stalled every commit waiting on it
    for about 40 ms, every few thousand orders. That measured the new cluster, not the service.
    """
    configured = os.environ.get("BENCH_DATABASE_URL")
    if configured:
        yield configured
        return
    bin_dir = _bin_dir()
    base = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    # PostgreSQL refuses to run as root: run it as an unprivileged account then.
    account = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody") if os.geteuid() == 0 else None
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)

    def run(*argv: str | Path) -> None:
        subprocess.run(  # noqa: S603  (fixed binaries of the local PostgreSQL installation)
            [str(part) for part in argv],
            cwd=base,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            env={**os.environ, "LC_ALL": "C"},
            check=True,
            capture_output=True,
            timeout=120,
        )

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    data = base / "data"
    try:
        no_sync = () if durable else ("--no-sync",)
        run(bin_dir / "initdb", "-D", data, "-U", "bench", "-A", "trust", "-E", "UTF8", *no_sync)
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base}"
        options += " -c wal_init_zero=off"
        if not durable:
            options += (
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB"
            )
        run(bin_dir / "pg_ctl", "-D", data, "-l", base / "server.log", "-o", options, "-w", "start")
        try:
            yield f"postgresql+asyncpg://bench@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(  # noqa: S603
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                cwd=base,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                capture_output=True,
                check=False,
                timeout=120,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True

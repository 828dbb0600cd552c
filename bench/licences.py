"""Per-device licensing benchmark: registration gas against one NFT per device, Merkle tree time, and
the resolver's query rate on PostgreSQL.

    .venv/bin/python bench/licences.py [--tree-devices 1000000] [--nft-batch 500]
        [--query-devices 100000] [--requests 20000] [--concurrency 32] [--bulk-rounds 10]
        [--bulk-connections 3] [--mixed-concurrency 4] [--resolver-workers N] [--skip-gas]

On the embedded EVM it deploys the pool, a licensed manufacturer, DeviceLicenses
and the DeviceNFT baseline (contracts/test/DeviceNFT.sol), then measures:

* gas per device of ``registerBatch`` for batches of 1, 1,000 and 100,000
  devices (after one warm-up registration, so the contract's BPC balance and
  batch counter are no longer zero: every registration but the very first pays
  this), and the gas of an ``isLicensed`` check in the 100,000-device batch;
* gas per device of minting one ERC-721 token per device, in one transaction
  of one token and one of ``--nft-batch`` tokens (the cheapest way to mint
  NFTs; the per-device figure is the batch one);
* the time to hash ``--tree-devices`` canonical device ids, build their tree
  (after which every proof is a few slices away), produce 10,000 proofs, and
  serialise and reload the tree.

Then the resolver, end to end over HTTP on the loopback interface:

* a throwaway PostgreSQL cluster (``bench/_pg.py``; ``BENCH_DATABASE_URL`` to use another),
  migrated; the service's licensing part (auth, chain, licensing routers and hooks) served by
  uvicorn in this process on the embedded chain;
* a licensed manufacturer uploads ``--query-devices`` device ids through the API, registers the
  batch on chain, and the indexer confirms it;
* with ``--resolver-workers N`` (N >= 1) the queries go instead to ``exchange licence resolver
  --workers N``, started as a process beside the service on the same database: the read-only
  resolver, scaled over N processes;
* a second process (this script with ``--load``) sends ``--requests`` single-device queries
  (``GET /v1/devices/serial/…``, nine in ten for registered devices) over ``--concurrency``
  keep-alive connections, timing each (after 2,000 untimed warm-up queries), then
  ``--bulk-rounds`` bulk queries of 10,000 devices one after another, with their proofs (the
  default), then as many without (``"proofs": false``), then as many with proofs in the batched
  layout (``"layout": "batches"``: each batch's fields and proof nodes once); each kind on
  ``--bulk-connections`` connections at once (3 by default: with two serving processes, one
  query is in flight while the other two are worked on; 1 gives one client's rate), the rate
  being that of all of them together. Every answer is parsed and checked. Its client is a
  minimal HTTP/1.1 client on asyncio streams, so that the client's own cost stays small next to
  the server's; client and server share the machine's cores;
* mixed: ``--bulk-rounds`` bulk queries with proofs one after another again, while
  ``--mixed-concurrency`` connections send single-device queries (as above) one after another
  until the last bulk answer is in: the single queries' latency while bulk answers are worked
  on in the same serving processes (with ``--resolver-workers 1``, in the same event loop).

Server CPU per query is the CPU time the serving processes used during the single-query phase
(warm-up included) divided by the queries sent: less sensitive than the rates to other work on
the machine. The load average when the queries started is printed with it. Database CPU per
query is the same for the PostgreSQL processes of the benchmark database's sessions, when the
server runs on this machine (else it is left out).

Numbers are printed; the last line is one JSON object. Nothing passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import Artifact, compile_contracts
from exchange.chain.deployment import deploy_pool, error_decoder
from exchange.chain.pool import PoolChain, Tier
from exchange.chain.provider import make_web3
from exchange.licenses.device_ids import SerialDeviceId
from exchange.licenses.merkle import MerkleTree

BPC = 10**18
REGISTRATION_SIZES = (1, 1_000, 100_000)


def deploy(w3: Web3, artifacts: dict[str, Artifact], name: str, *args: Any) -> BoundContract:
    artifact = artifacts[name]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact())
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError(f"{name} was not deployed")
    return BoundContract(w3, name, address, artifact.abi, error_decoder(artifacts))


def device_hashes(count: int, prefix: str) -> list[bytes]:
    return [SerialDeviceId("bench", f"{prefix}{n}").id_hash for n in range(count)]


def measure_gas(nft_batch: int) -> dict[str, Any]:
    w3 = make_web3()
    artifacts = compile_contracts()
    council, manufacturer, reference = (Web3.to_checksum_address(a) for a in list(w3.eth.accounts)[:3])
    pool = PoolChain(w3, deploy_pool(w3, artifacts=artifacts), artifacts)
    licenses = deploy(
        w3, artifacts, "DeviceLicenses", council, pool.bpc.address, pool.bpr.address, pool.registry.address
    )
    nft = deploy(w3, artifacts, "DeviceNFT")
    pool.set_tier_reference(Tier.SMALL, reference)
    pool.mint_bpc(reference, 100 * BPC)
    pool.admit(manufacturer, Tier.SMALL)
    pool.mint_bpc(manufacturer, 10_000 * BPC)
    pool.acquire(100 * BPC, sender=manufacturer)
    pool.approve_bpc(licenses.address, 2**256 - 1, sender=manufacturer)

    def register(tree: MerkleTree) -> int:
        receipt = licenses.transact("registerBatch", tree.root, tree.count, 10**15, sender=manufacturer)
        return int(receipt["gasUsed"])

    results: dict[str, Any] = {
        "first_registration_gas": register(MerkleTree.build(device_hashes(1, "warm-")))
    }
    trees: dict[int, tuple[list[bytes], MerkleTree]] = {}
    for size in REGISTRATION_SIZES:
        hashes = device_hashes(size, f"batch{size}-")
        trees[size] = hashes, MerkleTree.build(hashes)
        gas = register(trees[size][1])
        results[f"registration_gas_{size}"] = gas
        results[f"gas_per_device_{size}"] = gas / size
        print(f"registerBatch {size:>7,} devices: {gas:>9,} gas  {gas / size:>12,.2f} gas/device")
    hashes, tree = trees[100_000]
    batch_id = int(licenses.call("batchCount"))
    index = 2 * tree.count // 3
    function = licenses.contract.functions.isLicensed(batch_id, index, hashes[index], tree.proof(index))
    if function.call() is not True:
        raise RuntimeError("the contract refused a proof of the benchmark batch")
    results["is_licensed_gas_100k"] = int(function.estimate_gas())
    print(
        f"isLicensed in the 100,000-device batch (proof of {len(tree.proof(index))}): "
        f"{results['is_licensed_gas_100k']:,} gas (a call: free to the caller)"
    )

    for count in (1, nft_batch):
        receipt = nft.transact("mintDevices", manufacturer, device_hashes(count, f"nft{count}-"))
        gas = int(receipt["gasUsed"])
        results[f"nft_mint_gas_{count}"] = gas
        print(f"DeviceNFT.mintDevices {count:>5,} tokens: {gas:>11,} gas  {gas / count:>12,.2f} gas/device")
    results["nft_gas_per_device"] = results[f"nft_mint_gas_{nft_batch}"] / nft_batch
    ratio = results["nft_gas_per_device"] / results["gas_per_device_100000"]
    print(f"one NFT per device costs {ratio:,.0f} times a 100,000-device batch registration, per device")
    return results


def measure_tree(count: int) -> dict[str, float]:
    started = time.perf_counter()
    hashes = device_hashes(count, "SN")
    hashed = time.perf_counter()
    tree = MerkleTree.build(hashes)
    built = time.perf_counter()
    for sample in range(10_000):
        tree.proof(sample * 7_919 % count)  # spread over the whole tree
    proved = time.perf_counter()
    data = tree.to_bytes()
    MerkleTree.from_bytes(data)
    reloaded = time.perf_counter()
    print(
        f"{count:,} devices: canonical ids + keccak {hashed - started:.2f} s, tree {built - hashed:.2f} s "
        f"(depth {tree.depth}), 10,000 proofs {proved - built:.3f} s, "
        f"serialise + reload with check {reloaded - proved:.2f} s ({len(data) / 2**20:.0f} MiB)"
    )
    return {
        "ids_s": hashed - started,
        "tree_s": built - hashed,
        "proof_us": (proved - built) / 10_000 * 1e6,
        "reload_s": reloaded - proved,
    }


# --- resolver queries on PostgreSQL ------------------------------------------------------------------

T = TypeVar("T")
QUERY_BPC_PER_DEVICE = 10**15
BULK_SIZE = 10_000
# The kinds of bulk rounds, each measured in a phase of its own: with proofs, without, and with
# proofs in the batched layout (each batch's fields and proof nodes once).
BULK_KINDS: dict[str, tuple[bool, str]] = {
    "bulk": (True, "devices"),
    "bulk_no_proofs": (False, "devices"),
    "bulk_batched": (True, "batches"),
}


def query_id(n: int) -> str:
    return f"serial:bench:Q{n}"


class Served:
    """The app under uvicorn in a thread; `run` executes code on the server's event loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None

    async def remember_loop(self, _app: Any) -> None:
        """A lifespan hook: note the loop the server runs on."""
        self.loop = asyncio.get_running_loop()

    def start(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=60)

    def run(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run `action` on the server's loop (the embedded EVM is only ever touched from there)."""
        if self.loop is None:
            raise RuntimeError("the server's loop is unknown")
        return asyncio.run_coroutine_threadsafe(action(), self.loop).result(timeout=600)  # type: ignore[arg-type]


WARM_UP_REQUESTS = 2_000


def _process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of process `root` and its living descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(pid)
        stats[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        total += stats.get(pid, 0.0)
        pending.extend(children.get(pid, []))
    return total


def _backend_cpu_s(database_url: str) -> dict[int, float] | None:
    """User + system CPU seconds of each server process of the database's sessions (from /proc),
    None when the server runs elsewhere (its processes are not this machine's)."""
    import asyncpg

    async def backends() -> list[int]:
        connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await connection.close()
        return [int(row[0]) for row in rows]

    cpu: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in asyncio.run(backends()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return cpu


def _start_resolver(database_url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """`exchange licence resolver --workers N` on a free port, once it answers."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    exchange = Path(sys.executable).with_name("exchange")
    process = subprocess.Popen(  # noqa: S603  (the project's own command)
        [
            str(exchange),
            "licence",
            "resolver",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env={**os.environ, "DATABASE_URL": database_url, "EXCHANGE_LOG_LEVEL": "WARNING"},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/v1/devices/serial/bench:probe", timeout=5).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the resolver did not start")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def measure_queries(
    devices: int,
    requests: int,
    concurrency: int,
    bulk_rounds: int,
    resolver_workers: int,
    mixed_concurrency: int,
    bulk_connections: int,
) -> dict[str, Any]:
    import httpx
    from _pg import postgres_url  # bench/ is the script's directory
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_tester.backends.pyevm.main import get_default_account_keys

    from exchange.api.app import create_app
    from exchange.auth.routes import router as auth_router
    from exchange.auth.siwe import SiweMessage
    from exchange.chain.lifespan import chain_startup
    from exchange.chain.routes import router as chain_router
    from exchange.chain.runtime import start_chain
    from exchange.db.migrate import upgrade_to_head
    from exchange.licenses.device_routes import link_router
    from exchange.licenses.device_routes import router as devices_router
    from exchange.licenses.lifespan import licensing_startup
    from exchange.licenses.routes import router as licences_router
    from exchange.settings import Settings

    with postgres_url() as database_url:
        upgrade_to_head(database_url)
        runtime = start_chain(None)
        pool = runtime.pool
        manufacturer = Account.from_key(get_default_account_keys()[1].to_bytes())
        reference = Web3.to_checksum_address(list(runtime.w3.eth.accounts)[9])
        pool.set_tier_reference(Tier.SMALL, reference)
        pool.mint_bpc(reference, 100 * BPC)
        pool.admit(manufacturer.address, Tier.SMALL)
        pool.mint_bpc(manufacturer.address, 10_000 * BPC)
        pool.acquire(100 * BPC, sender=manufacturer.address)
        pool.approve_bpc(pool.devices.address, 2**256 - 1, sender=manufacturer.address)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        settings = Settings(
            database_url=database_url,
            migrate_on_start=False,
            host="127.0.0.1",
            port=port,
            licence_indexer_interval_s=0,
            log_level="WARNING",
            log_format="json",
        )
        served = Served()
        app = create_app(
            settings,
            routers=[auth_router, chain_router, licences_router, devices_router, link_router],
            lifespan_hooks=[chain_startup(runtime), licensing_startup(), served.remember_loop],
        )
        served.start(app, port)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                issued = client.post("/v1/auth/nonce").json()
                text = SiweMessage(
                    domain=issued["domain"],
                    address=manufacturer.address,
                    uri=f"{base}/",
                    chain_id=issued["chain_id"],
                    nonce=issued["nonce"],
                    issued_at=datetime.now(UTC).replace(microsecond=0),
                ).render()
                signature = "0x" + bytes(manufacturer.sign_message(encode_defunct(text=text)).signature).hex()
                token = client.post("/v1/auth/login", json={"message": text, "signature": signature}).json()
                headers = {"Authorization": f"Bearer {token['access_token']}"}
                started = time.perf_counter()
                reply = client.post(
                    "/v1/devices/batches",
                    json={
                        "bpc_per_device_wei": str(QUERY_BPC_PER_DEVICE),
                        "devices": [query_id(n) for n in range(devices)],
                    },
                    headers=headers,
                )
                if reply.status_code != 201:
                    raise RuntimeError(f"upload refused: {reply.text[:500]}")
                uploaded_s = time.perf_counter() - started
                root = bytes.fromhex(reply.json()["batch"]["root"][2:])

                async def register() -> None:
                    pool.devices.transact(
                        "registerBatch", root, devices, QUERY_BPC_PER_DEVICE, sender=manufacturer.address
                    )
                    await app.state.licensing.indexer.catch_up()

                served.run(register)
                check = client.get(
                    f"/v1/devices/serial/{query_id(devices - 1).removeprefix('serial:')}"
                ).json()
                if check["status"] != "licensed":
                    raise RuntimeError(f"the registered batch does not resolve: {check}")
            print(f"uploaded {devices:,} device ids through the API in {uploaded_s:.1f} s")
            resolver = None
            target = base
            if resolver_workers:
                resolver, target = _start_resolver(database_url, resolver_workers)
                print(f"querying `exchange licence resolver --workers {resolver_workers}` at {target}")
            load_average = os.getloadavg()[0]
            result: dict[str, Any] = {}
            try:
                for phase in ("single", *BULK_KINDS, "mixed"):
                    cpu_before = time.process_time()
                    resolver_cpu_before = _process_tree_cpu_s(resolver.pid) if resolver else 0.0
                    database_cpu_before = _backend_cpu_s(database_url)
                    load = subprocess.run(  # noqa: S603  (this script, with the same interpreter)
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--load",
                            target,
                            "--phase",
                            phase,
                            "--query-devices",
                            str(devices),
                            "--requests",
                            str(requests),
                            "--concurrency",
                            str(concurrency),
                            "--bulk-rounds",
                            str(bulk_rounds),
                            "--mixed-concurrency",
                            str(mixed_concurrency),
                            "--bulk-connections",
                            str(bulk_connections),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=3_600,
                    )
                    # This process only serves while the load runs: its CPU time is the server's,
                    # plus the resolver processes' when they serve.
                    result[f"{phase}_server_cpu_s"] = time.process_time() - cpu_before
                    if resolver:
                        result[f"{phase}_server_cpu_s"] += (
                            _process_tree_cpu_s(resolver.pid) - resolver_cpu_before
                        )
                    # The database's share: its sessions' processes (those opened meanwhile from 0).
                    database_cpu_after = _backend_cpu_s(database_url)
                    if database_cpu_before is not None and database_cpu_after is not None:
                        result[f"{phase}_database_cpu_s"] = sum(
                            spent - database_cpu_before.get(pid, 0.0)
                            for pid, spent in database_cpu_after.items()
                        )
                    result.update(json.loads(load.stdout.strip().splitlines()[-1]))
            finally:
                if resolver:
                    _stop(resolver)
        finally:
            served.stop()
    result["upload_s"] = uploaded_s
    result["load_average"] = load_average
    sent = result["requests"] + min(WARM_UP_REQUESTS, result["requests"])
    result["server_cpu_ms_per_query"] = result["single_server_cpu_s"] / sent * 1e3
    # Each kind of bulk rounds with its warm-up rounds (one per connection).
    rounds = (result["bulk_rounds"] + 1) * bulk_connections
    bulk_cpu: dict[str, str] = {}
    for kind in BULK_KINDS:
        result[f"server_cpu_ms_per_{kind}"] = result[f"{kind}_server_cpu_s"] / rounds * 1e3
        bulk_cpu[kind] = f"server CPU {result[f'server_cpu_ms_per_{kind}']:.0f} ms"
        if f"{kind}_database_cpu_s" in result:
            result[f"database_cpu_ms_per_{kind}"] = result[f"{kind}_database_cpu_s"] / rounds * 1e3
            bulk_cpu[kind] += f", database CPU {result[f'database_cpu_ms_per_{kind}']:.0f} ms"
    query_database = ""
    if "single_database_cpu_s" in result:
        result["database_cpu_ms_per_query"] = result["single_database_cpu_s"] / sent * 1e3
        query_database = f", database CPU {result['database_cpu_ms_per_query']:.2f} ms"
    print(
        f"single-device queries: {result['query_per_s']:,.0f}/s over {concurrency} connections "
        f"({result['requests']:,} requests, {result['errors']} errors), "
        f"latency p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms; server CPU {result['server_cpu_ms_per_query']:.2f} ms per query"
        f"{query_database} "
        f"(load average {result['load_average']:.1f} on {os.cpu_count()} cores when it started)"
    )
    for kind, title in (
        ("bulk", ""),
        ("bulk_no_proofs", " without proofs"),
        ("bulk_batched", " in the batched layout"),
    ):
        print(
            f"bulk queries of {BULK_SIZE:,}{title}: {result[f'{kind}_devices_per_s']:,.0f} devices/s "
            f"({result['bulk_rounds']} rounds on each of {bulk_connections} connection(s), "
            f"{result[f'{kind}_round_ms']:.0f} ms per round, {result[f'{kind}_mib']:.1f} MiB per answer, "
            f"{bulk_cpu[kind]} per round, the client's parse included in the round)"
        )
    print(
        f"single-device queries while bulk queries of {BULK_SIZE:,} with proofs run: "
        f"latency p50 {result['mixed_p50_ms']:.2f} ms, p99 {result['mixed_p99_ms']:.2f} ms, "
        f"max {result['mixed_max_ms']:.2f} ms ({result['mixed_requests']:,} requests over "
        f"{mixed_concurrency} connections, {result['mixed_query_per_s']:,.0f}/s, "
        f"{result['mixed_errors']} errors); bulk {result['mixed_bulk_round_ms']:.0f} ms per round "
        f"({result['bulk_rounds']} rounds)"
    )
    return result


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str, body: bytes = b""
) -> tuple[int, bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def _single_paths(devices: int, requests: int) -> list[str]:
    rng = random.Random(20261122)  # noqa: S311  (reproducible query mix, not secrets)
    # Nine in ten queries name a registered device, the rest devices nobody registered.
    return [
        "/v1/devices/serial/"
        + query_id(rng.randrange(devices) if rng.random() < 0.9 else devices + n).removeprefix("serial:")
        for n in range(requests)
    ]


class _Singles:
    """Single-device queries over keep-alive connections: latencies and errors, answers spot-checked."""

    def __init__(self, host: str, port: int, devices: int) -> None:
        self.host, self.port, self.devices = host, port, devices
        self.latencies: list[float] = []
        self.errors = 0
        self.checked = 0

    async def worker(self, share: list[str], timed: bool, until: asyncio.Event | None = None) -> None:
        """Send `share` one after another (stopping early once `until` is set)."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            for path in share:
                if until is not None and until.is_set():
                    break
                started = time.perf_counter()
                status, body = await _exchange(reader, writer, "GET", path)
                if timed:
                    self.latencies.append(time.perf_counter() - started)
                if status != 200:
                    self.errors += 1
                elif len(self.latencies) % 97 == 0:  # spot-check answers without parsing them all
                    answer = json.loads(body)
                    expected = int(path.rsplit("Q", 1)[1]) < self.devices
                    self.errors += (answer["status"] == "licensed") != expected
                    self.checked += 1
        finally:
            writer.close()

    def percentiles(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "p50_ms": statistics.median(ordered) * 1e3,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
            "max_ms": ordered[-1] * 1e3,
        }


async def _load(
    base: str,
    phase: str,
    devices: int,
    requests: int,
    concurrency: int,
    bulk_rounds: int,
    mixed_concurrency: int,
    bulk_connections: int,
) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    if phase in BULK_KINDS:
        return await _load_bulk(host, int(port), devices, bulk_rounds, phase, bulk_connections)
    if phase == "mixed":
        return await _load_mixed(host, int(port), devices, bulk_rounds, mixed_concurrency)
    paths = _single_paths(devices, requests)
    singles = _Singles(host, int(port), devices)
    warm_up = paths[: min(WARM_UP_REQUESTS, requests)]
    await asyncio.gather(*(singles.worker(warm_up[i::concurrency], False) for i in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(singles.worker(paths[i::concurrency], True) for i in range(concurrency)))
    elapsed = time.perf_counter() - started

    percentiles = singles.percentiles()
    return {
        "requests": requests,
        "errors": singles.errors,
        "checked": singles.checked,
        "elapsed_s": elapsed,
        "query_per_s": requests / elapsed,
        "p50_ms": percentiles["p50_ms"],
        "p99_ms": percentiles["p99_ms"],
    }


def _bulk_body(devices: int, proofs: bool, layout: str = "devices") -> bytes:
    rng = random.Random(20261123)  # noqa: S311  (reproducible query mix, not secrets)
    ids = [query_id(rng.randrange(devices)) for _ in range(BULK_SIZE)]
    return json.dumps({"devices": ids, "proofs": proofs, "layout": layout}).encode()


async def _bulk_round(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes, proofs: bool
) -> bytes:
    """One bulk query, parsed and checked; its answer."""
    status, answer = await _exchange(reader, writer, "POST", "/v1/devices/query", body)
    document: dict[str, Any] = orjson.loads(answer) if status == 200 else {}
    answers = document.get("devices")
    if answers is None or len(answers) != BULK_SIZE:
        raise RuntimeError(f"bulk query failed: {status} {answer[:300]!r}")
    if "batches" in document:
        with_proofs = document["proofs"] and all(batch["levels"] is not None for batch in document["batches"])
    else:
        with_proofs = answers[0]["proof"] is not None
    if with_proofs != proofs:
        raise RuntimeError(f"bulk query answered {'with' if with_proofs else 'without'} proofs")
    return answer


async def _load_mixed(
    host: str, port: int, devices: int, bulk_rounds: int, mixed_concurrency: int
) -> dict[str, Any]:
    """Bulk queries with proofs one after another, and single queries over `mixed_concurrency`
    connections meanwhile, timed from the first bulk query's start to the last one's end."""
    body = _bulk_body(devices, True)
    reader, writer = await asyncio.open_connection(host, port, limit=32 * 2**20)
    expected = await _bulk_round(reader, writer, body, True)  # warm-up, alone, and checked
    singles = _Singles(host, port, devices)
    done = asyncio.Event()

    async def bulk() -> float:
        started = time.perf_counter()
        for _ in range(bulk_rounds):
            # Compared with the checked answer, not parsed: parsing 15 MiB would hold this
            # process's loop for tens of milliseconds, and the single queries' timings with it.
            status, answer = await _exchange(reader, writer, "POST", "/v1/devices/query", body)
            if status != 200 or answer != expected:
                raise RuntimeError(f"bulk query failed: {status} {answer[:300]!r}")
        elapsed = time.perf_counter() - started
        done.set()
        return elapsed

    # More paths than the singles can send meanwhile; they stop when the last bulk answer is in.
    paths = _single_paths(devices, 200_000)
    started = time.perf_counter()
    workers = [
        asyncio.create_task(singles.worker(paths[i::mixed_concurrency], True, done))
        for i in range(mixed_concurrency)
    ]
    bulk_s = await bulk()
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    writer.close()
    percentiles = singles.percentiles()
    return {
        "mixed_requests": len(singles.latencies),
        "mixed_errors": singles.errors,
        "mixed_query_per_s": len(singles.latencies) / elapsed,
        "mixed_p50_ms": percentiles["p50_ms"],
        "mixed_p99_ms": percentiles["p99_ms"],
        "mixed_max_ms": percentiles["max_ms"],
        "mixed_bulk_round_ms": bulk_s / bulk_rounds * 1e3,
    }


async def _load_bulk(
    host: str, port: int, devices: int, bulk_rounds: int, kind: str, connections: int
) -> dict[str, Any]:
    """`bulk_rounds` bulk queries of `kind` one after another on each of `connections`
    connections, every answer parsed and checked, after one warm-up round on each; the rate is
    that of all the connections together, from the end of the warm-up to the last answer."""
    proofs, layout = BULK_KINDS[kind]
    body = _bulk_body(devices, proofs, layout)
    size = 0

    async def rounds(started: asyncio.Event) -> None:
        nonlocal size
        # A buffer that holds a whole answer: with the default (64 KiB) the stream pauses and
        # resumes the socket every 128 KiB of a 15 MiB answer.
        reader, writer = await asyncio.open_connection(host, port, limit=32 * 2**20)
        ready.append(len(await _bulk_round(reader, writer, body, proofs)))  # the warm-up round
        if len(ready) == connections:
            started.set()
        await started.wait()
        for _ in range(bulk_rounds):
            size = len(await _bulk_round(reader, writer, body, proofs))
        writer.close()

    ready: list[int] = []
    started = asyncio.Event()
    tasks = [asyncio.create_task(rounds(started)) for _ in range(connections)]
    # A warm-up round that fails ends the phase with its error instead of waiting for the others.
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        error = task.exception() if task.done() else None
        if error is not None:
            waiting.cancel()
            raise error
    await waiting
    begun = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begun
    return {
        "bulk_rounds": bulk_rounds,
        f"{kind}_round_ms": elapsed / bulk_rounds * 1e3,
        f"{kind}_devices_per_s": BULK_SIZE * bulk_rounds * connections / elapsed,
        f"{kind}_mib": size / 2**20,
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree-devices", type=int, default=1_000_000)
    parser.add_argument("--nft-batch", type=int, default=500)
    parser.add_argument("--query-devices", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bulk-rounds", type=int, default=10)
    parser.add_argument(
        "--bulk-connections",
        type=_positive,
        default=3,
        help="connections sending bulk queries at once, each its --bulk-rounds (the bulk measurements; "
        "1 for one client's rate)",
    )
    parser.add_argument(
        "--mixed-concurrency",
        type=int,
        default=4,
        help="connections sending single queries while bulk queries run (the mixed measurement)",
    )
    parser.add_argument(
        "--resolver-workers",
        type=int,
        default=0,
        help="query `exchange licence resolver --workers N` instead of the service (0: the service)",
    )
    parser.add_argument(
        "--skip-gas", action="store_true", help="only the query benchmark (and no tree timing)"
    )
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # the load process
    parser.add_argument(
        "--phase", choices=["single", *BULK_KINDS, "mixed"], default="single", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.load:
        print(
            json.dumps(
                asyncio.run(
                    _load(
                        args.load,
                        args.phase,
                        args.query_devices,
                        args.requests,
                        args.concurrency,
                        args.bulk_rounds,
                        args.mixed_concurrency,
                        args.bulk_connections,
                    )
                )
            )
        )
        return
    summary: dict[str, Any] = {}
    if not args.skip_gas:
        gas = measure_gas(args.nft_batch)
        tree = measure_tree(args.tree_devices)
        summary.update(
            gas_per_device_100k=round(gas["gas_per_device_100000"], 3),
            nft_gas_per_device=round(gas["nft_gas_per_device"], 1),
            merkle_1m_s=round(tree["tree_s"], 2),
        )
    queries = measure_queries(
        args.query_devices,
        args.requests,
        args.concurrency,
        args.bulk_rounds,
        args.resolver_workers,
        args.mixed_concurrency,
        args.bulk_connections,
    )
    summary.update(
        query_per_s=round(queries["query_per_s"]),
        query_p99_ms=round(queries["p99_ms"], 2),
        bulk_devices_per_s=round(queries["bulk_devices_per_s"]),
        bulk_no_proofs_devices_per_s=round(queries["bulk_no_proofs_devices_per_s"]),
        bulk_batched_devices_per_s=round(queries["bulk_batched_devices_per_s"]),
    )
    if not args.skip_gas:
        summary.update(
            registration_gas_1=gas["registration_gas_1"],
            registration_gas_1k=gas["registration_gas_1000"],
            registration_gas_100k=gas["registration_gas_100000"],
            first_registration_gas=gas["first_registration_gas"],
            is_licensed_gas_100k=gas["is_licensed_gas_100k"],
            nft_mint_gas_1=gas["nft_mint_gas_1"],
            merkle_tree_devices=args.tree_devices,
            merkle_ids_s=round(tree["ids_s"], 2),
            merkle_proof_us=round(tree["proof_us"], 1),
            merkle_reload_s=round(tree["reload_s"], 2),
        )
    summary.update(
        query_p50_ms=round(queries["p50_ms"], 2),
        query_devices=args.query_devices,
        query_requests=queries["requests"],
        query_concurrency=args.concurrency,
        query_errors=queries["errors"],
        bulk_round_ms=round(queries["bulk_round_ms"], 1),
        bulk_no_proofs_round_ms=round(queries["bulk_no_proofs_round_ms"], 1),
        bulk_batched_round_ms=round(queries["bulk_batched_round_ms"], 1),
        bulk_mib=round(queries["bulk_mib"], 2),
        bulk_batched_mib=round(queries["bulk_batched_mib"], 2),
        bulk_connections=args.bulk_connections,
        resolver_workers=args.resolver_workers,
        server_cpu_ms_per_query=round(queries["server_cpu_ms_per_query"], 3),
        **{
            f"{measure}_ms_per_{kind}": round(queries[f"{measure}_ms_per_{kind}"], 1)
            for kind in BULK_KINDS
            for measure in ("server_cpu", "database_cpu")
            if f"{measure}_ms_per_{kind}" in queries
        },
        database_cpu_ms_per_query=round(queries["database_cpu_ms_per_query"], 3)
        if "database_cpu_ms_per_query" in queries
        else None,
        load_average=round(queries["load_average"], 2),
        upload_s=round(queries["upload_s"], 1),
        mixed_query_p50_ms=round(queries["mixed_p50_ms"], 2),
        mixed_query_p99_ms=round(queries["mixed_p99_ms"], 2),
        mixed_query_max_ms=round(queries["mixed_max_ms"], 2),
        mixed_query_per_s=round(queries["mixed_query_per_s"]),
        mixed_queries=queries["mixed_requests"],
        mixed_concurrency=args.mixed_concurrency,
        mixed_bulk_round_ms=round(queries["mixed_bulk_round_ms"], 1),
    )
    print(json.dumps(summary, sort_keys=False))


if __name__ == "__main__":
    main()

"""``exchange licence …`` against a Hardhat node: label export, scanning photos of labels, certificates.

The node runs the pool from a deployment manifest, as a verifier in the field would find it.
``scan --service`` asks a real service (uvicorn on a loopback port, its indexer polling the
node) for the proof, and checks it on the node itself.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from PIL import Image
from web3 import Web3

from exchange.api.app import create_app
from exchange.auth.routes import router as auth_router
from exchange.chain.deployment import deploy_pool
from exchange.chain.lifespan import chain_startup
from exchange.chain.pool import PoolChain, Tier
from exchange.chain.provider import make_web3
from exchange.chain.runtime import start_chain
from exchange.cli import main
from exchange.licenses.barcodes import ImageType, Symbology, render
from exchange.licenses.certificates import Certificate
from exchange.licenses.device_routes import link_router
from exchange.licenses.device_routes import router as devices_router
from exchange.licenses.lifespan import licensing_startup
from exchange.licenses.merkle import MerkleTree
from exchange.licenses.routes import router as licences_router
from exchange.settings import Settings
from tests.chain.nodes import hardhat_node
from tests.licenses_service.signing import sign_in

pytestmark = pytest.mark.hardhat

BPC = 10**18
# Hardhat's default development accounts 1 and 2 (public test keys of the "test … junk" mnemonic).
MANUFACTURER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OUTSIDER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
SQUATTER_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # account 3
RESOLVER = "https://id.example.org"


@dataclass
class Node:
    url: str
    manifest: Path
    pool: PoolChain
    manufacturer: LocalAccount
    outsider: LocalAccount


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with hardhat_node() as url:
        w3 = make_web3(url)
        deployment = deploy_pool(w3)
        manifest = tmp_path_factory.mktemp("deployment") / "manifest.json"
        deployment.write(manifest)
        pool = PoolChain(w3, deployment)
        manufacturer, outsider = Account.from_key(MANUFACTURER_KEY), Account.from_key(OUTSIDER_KEY)
        reference = Web3.to_checksum_address(list(w3.eth.accounts)[9])
        pool.set_tier_reference(Tier.SMALL, reference)
        pool.mint_bpc(reference, 100 * BPC)
        pool.admit(manufacturer.address, Tier.SMALL)
        pool.mint_bpc(manufacturer.address, 1_000 * BPC)
        pool.acquire(100 * BPC, sender=manufacturer.address)
        pool.approve_bpc(pool.devices.address, 2**256 - 1, sender=manufacturer.address)
        yield Node(url, manifest, pool, manufacturer, outsider)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = main([str(part) for part in argv])
    return code, capsys.readouterr().out


def photographed(label: Path, out: Path, *, angle: float, scale: float) -> Path:
    """The label as a camera might see it: scaled, turned, on a grey background, as JPEG."""
    image = Image.open(label).convert("L")
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BICUBIC)
    image = image.rotate(angle, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    canvas = Image.new("L", (image.width + 80, image.height + 60), 200)
    canvas.paste(image, (40, 30))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=85)
    out.write_bytes(buffer.getvalue())
    return out


def test_export_then_scan_label_photos_against_the_chain(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text("device_id\nimei:352099001761481\nserial:acme:SN-1\ngs1:(01)09506000134352(21)A/1\n")
    labels = tmp_path / "labels"
    code, out = run(
        capsys,
        "licence",
        "devices",
        "export",
        labels,
        "--ids",
        ids,
        "--resolver-base",
        RESOLVER,
        "--formats",
        "qr_png,datamatrix_png,qr_svg",
    )
    assert code == 0, out
    batch = json.loads((labels / "batch.json").read_text())
    assert batch["device_count"] == 3
    assert {path.name for path in labels.iterdir()} >= {"manifest.csv", "tree.bin", "000002.datamatrix.png"}
    # The manufacturer registers the exported root itself (no batch id in batch.json: scan finds it).
    node.pool.devices.transact(
        "registerBatch", bytes.fromhex(batch["root"][2:]), 3, 10**15, sender=node.manufacturer.address
    )
    chain: list[str | Path] = ["--rpc", node.url, "--manifest", node.manifest, "--batch", labels]
    for label, angle, scale in (
        ("000000.qr.png", 0, 1.0),
        ("000001.qr.png", 33, 0.7),
        ("000002.datamatrix.png", 90, 1.6),
    ):
        photo = photographed(labels / label, tmp_path / f"{label}.jpg", angle=angle, scale=scale)
        code, out = run(capsys, "licence", "scan", photo, *chain)
        assert code == 0, out
        assert "LICENSED (DeviceLicenses" in out
        assert "leads to the on-chain root" in out

    batch_id = int(node.pool.devices.call("batchCount"))
    node.pool.devices.transact("revokeDevices", batch_id, [1], sender=node.manufacturer.address)
    code, out = run(capsys, "licence", "scan", labels / "000001.qr.png", *chain)
    assert code == 1
    assert "NOT LICENSED: revoked" in out

    # A batch directory whose tree was tampered with gives a proof the chain refuses.
    forged = MerkleTree.build([bytes(32), bytes(31) + b"\x01", bytes(31) + b"\x02"])
    (labels / "tree.bin").write_bytes(forged.to_bytes())
    (labels / "batch.json").write_text(json.dumps({**batch, "batch_id": batch_id}))
    code, out = run(capsys, "licence", "scan", labels / "000000.qr.png", *chain)
    assert code == 1
    assert "does NOT lead" in out
    assert "invalid proof" in out


def test_scan_takes_the_manufacturers_batch_not_another_registration_of_its_root(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anyone licensed can register a root they have seen, and revoke its devices in that batch:
    scanning an exported batch looks only at the batches of the manufacturer batch.json records."""
    pool = node.pool
    squatter = Account.from_key(SQUATTER_KEY)
    pool.admit(squatter.address, Tier.SMALL)
    pool.mint_bpc(squatter.address, 1_000 * BPC)
    pool.acquire(100 * BPC, sender=squatter.address)
    pool.approve_bpc(pool.devices.address, 2**256 - 1, sender=squatter.address)
    ids = tmp_path / "ids.csv"
    ids.write_text("device_id\nserial:acme:SQ-1\nserial:acme:SQ-2\n")
    labels = tmp_path / "labels"
    export = ["licence", "devices", "export", labels, "--ids", ids, "--resolver-base", RESOLVER]
    code, out = run(capsys, *export, "--formats", "qr_png", "--manufacturer", node.manufacturer.address)
    assert code == 0, out
    batch = json.loads((labels / "batch.json").read_text())
    assert batch["manufacturer"] == node.manufacturer.address
    root = bytes.fromhex(batch["root"][2:])
    pool.devices.transact("registerBatch", root, 2, 10**15, sender=squatter.address)
    squatted = int(pool.devices.call("batchCount"))
    pool.devices.transact("revokeDevices", squatted, [0, 1], sender=squatter.address)
    pool.devices.transact("registerBatch", root, 2, 10**15, sender=node.manufacturer.address)

    chain: list[str | Path] = ["--rpc", node.url, "--manifest", node.manifest, "--batch", labels]
    code, out = run(capsys, "licence", "scan", labels / "000000.qr.png", *chain)
    assert code == 0, out
    assert "LICENSED (DeviceLicenses" in out
    assert f"batch {squatted + 1} on chain: manufacturer {node.manufacturer.address}" in out

    # With no manufacturer recorded, registrations by two accounts are refused, not guessed between.
    (labels / "batch.json").write_text(json.dumps({**batch, "manufacturer": None}))
    assert main(["licence", "scan", str(labels / "000000.qr.png"), *map(str, chain)]) == 2
    assert "give --manufacturer" in capsys.readouterr().err
    code, out = run(
        capsys,
        "licence",
        "scan",
        labels / "000000.qr.png",
        *chain,
        "--manufacturer",
        node.manufacturer.address,
    )
    assert code == 0, out

    # A batch id recorded in batch.json (an export by the service, a reorganised chain) is the
    # manufacturer's only if the chain says so: here the squatter's, unrevoked registration.
    pool.devices.transact("registerBatch", root, 2, 10**15, sender=squatter.address)
    unrevoked = int(pool.devices.call("batchCount"))
    (labels / "batch.json").write_text(json.dumps({**batch, "batch_id": unrevoked}))
    code, out = run(capsys, "licence", "scan", labels / "000000.qr.png", *chain)
    assert code == 1, out
    assert f"batch {unrevoked} on chain: manufacturer {squatter.address}" in out
    assert f"NOT LICENSED: batch {unrevoked} was registered by {squatter.address}, not by" in out

    # Only the squatter's registrations for an account that made none: the verdict says so, and
    # a device the export does not hold is named as such.
    (labels / "batch.json").write_text(json.dumps({**batch, "manufacturer": node.outsider.address}))
    code, out = run(capsys, "licence", "scan", labels / "000000.qr.png", *chain)
    assert code == 1, out
    assert out.splitlines()[-1] == (
        f"NOT LICENSED: no batch of root {batch['root']} and 2 devices is registered "
        f"by {node.outsider.address}"
    )
    stranger = tmp_path / "stranger.png"
    stranger.write_bytes(render(f"{RESOLVER}/serial/acme/SQ-9", Symbology.QR, ImageType.PNG, module_px=4))
    code, out = run(capsys, "licence", "scan", stranger, *chain)
    assert code == 1, out
    assert out.splitlines()[-1] == f"NOT LICENSED: the device is not in the batch exported to {labels}"

    # An export that names another pool's registry is not checked against this one's batches.
    other = "0x" + "11" * 20
    (labels / "batch.json").write_text(
        json.dumps({**batch, "registry": other, "chain_id": pool.deployment.chain_id})
    )
    assert main(["licence", "scan", str(labels / "000000.qr.png"), *map(str, chain)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {labels / 'batch.json'} names DeviceLicenses {other} on chain {pool.deployment.chain_id}, "
        f"the manifest {pool.devices.address} on chain {pool.deployment.chain_id}: give that pool's manifest"
    ]


@pytest.fixture
def service_url(node: Node, tmp_path: Path) -> Iterator[str]:
    """The licensing service on the node, on a free loopback port, its indexer polling every 0.2 s."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'service.sqlite3'}",
        chain_rpc_url=node.url,
        dev_accounts=True,
        deployment_manifest=node.manifest,
        licence_indexer_interval_s=0.2,
        log_format="console",
    )
    runtime = start_chain(node.url, manifest_path=node.manifest)
    app = create_app(
        settings,
        routers=[auth_router, licences_router, devices_router, link_router],
        lifespan_hooks=[chain_startup(runtime), licensing_startup()],
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the service stopped while starting"
        assert time.monotonic() < deadline, "the service did not start in time"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_scan_with_the_proof_from_the_service(
    node: Node, service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with httpx.Client(base_url=service_url, timeout=60) as client:
        headers = sign_in(client, node.manufacturer)
        reply = client.post(
            "/v1/devices/batches",
            json={"bpc_per_device_wei": "1000", "devices": ["serial:acme:S-1", "serial:acme:S-2"]},
            headers=headers,
        )
        assert reply.status_code == 201, reply.text
        root = reply.json()["batch"]["root"]
        upload_id = reply.json()["batch"]["upload_id"]
        node.pool.devices.transact(
            "registerBatch", bytes.fromhex(root[2:]), 2, 1000, sender=node.manufacturer.address
        )
        deadline = time.monotonic() + 30
        while client.get(f"/v1/devices/batches/{upload_id}", headers=headers).json()["status"] != "confirmed":
            assert time.monotonic() < deadline, "the indexer did not confirm the batch"
            time.sleep(0.1)
        labels = tmp_path / "labels"
        token = headers["Authorization"].removeprefix("Bearer ")
        code, out = run(
            capsys,
            "licence",
            "devices",
            "export",
            labels,
            "--service",
            service_url,
            "--upload-id",
            upload_id,
            "--token",
            token,
            "--resolver-base",
            service_url,
            "--formats",
            "qr_png",
        )
        assert code == 0, out
        # The label's link is the service's resolver.
        assert client.get("/serial/acme/S-2").json()["status"] == "licensed"
    code, out = run(
        capsys,
        "licence",
        "scan",
        labels / "000001.qr.png",
        "--rpc",
        node.url,
        "--manifest",
        node.manifest,
        "--service",
        service_url,
    )
    assert code == 0, out
    assert "device serial:acme:S-2" in out
    assert "LICENSED" in out

    # With --manufacturer, the service's batch must be that account's: a service pointing at a
    # batch somebody else registered is not believed.
    scan = ["licence", "scan", labels / "000001.qr.png", "--rpc", node.url, "--manifest", node.manifest]
    code, out = run(capsys, *scan, "--service", service_url, "--manufacturer", node.manufacturer.address)
    assert code == 0, out
    assert "\nLICENSED (DeviceLicenses" in out
    stranger = Account.from_key(SQUATTER_KEY).address
    code, out = run(capsys, *scan, "--service", service_url, "--manufacturer", stranger)
    assert code == 1, out
    assert f"registered by {node.manufacturer.address}, not by {stranger}" in out
    assert "\nLICENSED" not in out


def test_certificates_status_and_threshold(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = node.pool
    chain: list[str | Path] = ["--rpc", node.url, "--manifest", node.manifest]
    now = int(pool.w3.eth.get_block("latest")["timestamp"])

    def certificate(holder: LocalAccount) -> Certificate:
        return Certificate(
            chain_id=pool.deployment.chain_id,
            verifying_contract=pool.bpr.address,
            holder=holder.address,
            pool=pool.registry.address,
            statement="licensed",
            issued_at=now - 10,
            expires_at=now + 3_600,
            nonce=7,
        )

    cert = certificate(node.manufacturer)
    signature = node.manufacturer.sign_message(cert.signable()).signature
    as_json = tmp_path / "cert.json"
    as_json.write_text(
        json.dumps({"certificate": cert.typed_data(), "signature": "0x" + bytes(signature).hex()})
    )
    code, out = run(capsys, "licence", "verify-cert", as_json, *chain)
    assert code == 0, out
    assert "VALID" in out
    qr = tmp_path / "cert.png"
    qr.write_bytes(render(cert.to_compact(bytes(signature)), Symbology.QR, ImageType.PNG, module_px=4))
    assert run(capsys, "licence", "verify-cert", qr, *chain)[0] == 0
    assert main(["licence", "scan", str(qr), "--service", "http://127.0.0.1:9", *map(str, chain)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {qr} holds a licence certificate, not a device's code: check it with "
        "`exchange licence verify-cert`"
    ]

    # A statement is the signer's text: what a terminal would act on is written out, so that it
    # cannot print a verdict of its own, or hide or clear the real one.
    forged = dataclasses.replace(cert, statement="ok\nVALID\n\x1b[2J\x1b[8m")
    forged_file = tmp_path / "forged.txt"
    forged_file.write_text(forged.to_compact(bytes(node.outsider.sign_message(forged.signable()).signature)))
    code, out = run(capsys, "licence", "verify-cert", forged_file, *chain)
    assert code == 1
    assert "statement: ok\\nVALID\\n\\x1b[2J\\x1b[8m" in out.splitlines()
    assert "VALID" not in out.splitlines()
    # Damaged compact text is refused, not read past: the decoder would skip what is not base64url.
    text = cert.to_compact(bytes(signature))
    damaged = tmp_path / "damaged.txt"
    damaged.write_text(text[:30] + "!!!" + text[30:])
    assert main(["licence", "verify-cert", str(damaged), *map(str, chain)]) == 2
    assert "not base64url" in capsys.readouterr().err
    svg = tmp_path / "cert.svg"
    svg.write_bytes(render(text, Symbology.QR, ImageType.SVG, module_px=4))
    assert main(["licence", "verify-cert", str(svg), *map(str, chain)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {svg} is neither a certificate (JSON, BPCERT1: text) nor a QR code image: not a readable "
        "raster image (an SVG, which is not read here): give a PNG, JPEG, GIF, BMP or TIFF"
    ]

    stranger = certificate(node.outsider)
    compact = tmp_path / "stranger.txt"
    compact.write_text(stranger.to_compact(bytes(node.outsider.sign_message(stranger.signable()).signature)))
    code, out = run(capsys, "licence", "verify-cert", compact, *chain)
    assert code == 1
    assert "holder_not_licensed" in out

    code, out = run(capsys, "licence", "status", node.manufacturer.address, *chain)
    assert code == 0
    assert "LICENSED" in out
    code, out = run(capsys, "licence", "status", node.outsider.address, *chain)
    assert code == 1
    assert "  kind none, tier -" in out.splitlines()  # no record, no tier (as the API's null)
    head = pool.w3.eth.block_number
    assert (
        main(["licence", "status", node.outsider.address, "--block", str(head + 1_000), *map(str, chain)])
        == 2
    )
    assert capsys.readouterr().err.splitlines() == [
        f"error: block {head + 1_000} is after the chain's head {head}"
    ]
    code, out = run(capsys, "licence", "threshold", *chain)
    assert code == 0
    small = next(line for line in out.splitlines() if line.startswith("small"))
    assert small.split()[1] == str(100 * BPC)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert run(capsys, "licence", "verify-cert", bad, *chain)[0] == 2


def test_export_refuses_a_resolver_base_whose_links_would_not_parse_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text("device_id\nserial:acme:SQ-1\n")
    labels = tmp_path / "labels"
    too_long = RESOLVER + "/" + "a" * 200
    code = main(["licence", "devices", "export", str(labels), "--ids", str(ids), "--resolver-base", too_long])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.startswith("error: --resolver-base:")
    assert "Traceback" not in captured.err
    assert not labels.exists()  # nothing written

"""``exchange licence …``: licences and devices checked against the chain itself, and label export.

Commands (each reads the pool's addresses from a deployment manifest, never from a service:
``--manifest``, by default the service's, ``EXCHANGE_DEPLOYMENT_MANIFEST``, else
``deployments/manifest.json``)::

    exchange licence threshold --rpc URL                 BPC threshold per tier, fee licence terms
    exchange licence status ADDRESS --rpc URL [--block N]
    exchange licence verify-cert FILE --rpc URL [--block N]
    exchange licence scan IMAGE --rpc URL (--service URL | --batch DIR) [--manufacturer ADDRESS]
    exchange licence devices export OUT_DIR (--ids FILE | --service URL --upload-id N --token T)
    exchange licence resolver [--host H] [--port P] [--workers N] [--manifest FILE]

``verify-cert`` reads a certificate as JSON (``{"certificate": typed data, "signature": "0x…"}``
or ``{"compact": "BPCERT1:…"}``), as the compact text, or as an image of its QR code.

``scan`` decodes a device label photo (zxing-cpp), takes the device's batch, index and proof
from the service (``--service``) or from an exported batch directory (``--batch``), and asks
the node itself: ``deviceStatus`` on the manifest's DeviceLicenses, the proof checked against
the root the chain holds. Nothing the service says is trusted: a wrong proof fails on chain,
and with ``--manufacturer`` a batch registered by any other account is not a licence (anyone can
register a root they have seen; the batch's registrant is printed either way). A service or
export naming another pool's DeviceLicenses than the manifest's is refused (exit 2): its batch
ids would name other batches, or none, here.

``resolver`` is the exception: it serves the device resolver alone (``GET /v1/devices/{scheme}/{id}``,
``POST /v1/devices/query``, the Digital Link paths) from the service's database, in ``--workers``
processes sharing one port, without the chain, the indexer or any writer; the registry is the
manifest's (``--manifest``, or ``EXCHANGE_DEPLOYMENT_MANIFEST``), else the one the service's
indexer follows. It runs beside ``exchange serve``, which keeps indexing.

``devices export`` writes a label per device (QR and Data Matrix, PNG and SVG), ``manifest.csv``,
``tree.bin`` (the batch's serialised Merkle tree) and ``batch.json`` — the directory ``scan
--batch`` reads. ``batch.json`` records the manufacturer (the service's, or ``--manufacturer``);
``scan --batch`` then looks only at batches that account registered, as anyone can register a
root they have seen, and refuses a recorded batch id that another account registered.
Exit codes: 0 valid/licensed, 1 invalid/not licensed, 2 usage or input errors, and whatever
stops the check itself (a file that cannot be read or is malformed, a service, node or database
that cannot be reached), reported in one ``error:`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import httpx

DEVICE_STATUS_NAMES = (
    "licensed",
    "unknown batch",
    "index out of range",
    "invalid proof",
    "batch suspended",
    "revoked",
)


class CliError(Exception):
    """A usage or input error: reported on stderr, exit code 2."""


class ProgressBar:
    """``[#####.....]  412/1,000 devices`` on one terminal line, redrawn at most every 1/200 of the work."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self._label, self._stream, self._width = label, stream or sys.stderr, width
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = max(total // 200, 1)
        if done != total and done - self._shown < step:
            return
        self._shown = done
        filled = self._width * done // max(total, 1)
        bar = "#" * filled + "." * (self._width - filled)
        self._stream.write(f"\r[{bar}] {done:,}/{total:,} {self._label}")
        if done == total:
            self._stream.write("\n")
        self._stream.flush()


def _pool(args: argparse.Namespace) -> Any:
    from web3 import HTTPProvider, Web3

    from exchange.chain.deployment import Deployment
    from exchange.chain.pool import PoolChain

    if not args.rpc:
        raise CliError("give --rpc URL or set CHAIN_RPC_URL")
    if not args.manifest.is_file():
        raise CliError(f"no deployment manifest at {args.manifest} (give --manifest PATH)")
    deployment = Deployment.read(args.manifest)
    w3 = Web3(HTTPProvider(args.rpc, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        raise CliError(f"no chain answers at {args.rpc}")
    if int(w3.eth.chain_id) != deployment.chain_id:
        raise CliError(
            f"the node is chain {w3.eth.chain_id}, the manifest is for chain {deployment.chain_id}"
        )
    return PoolChain(w3, deployment)


def cmd_threshold(args: argparse.Namespace) -> int:
    from exchange.chain.pool import Tier

    pool = _pool(args)
    block = int(pool.w3.eth.block_number)
    print(f"chain {pool.deployment.chain_id}, block {block}, LicenseGate {pool.gate.address}")
    for tier in Tier:
        reference = pool.tier_reference(tier) if tier is not Tier.NON_PROFIT else None
        if reference is not None and int(reference, 16) == 0:
            print(f"{tier.name.lower():<11} not configured (no reference address)")
            continue
        print(f"{tier.name.lower():<11} {pool.threshold(tier, block=block):>40} BPC base units")
    price_wei, term_s = pool.fee_licence_terms()
    offer = f"{price_wei} BPC base units for {term_s} s" if price_wei and term_s else "not offered"
    print(f"fee licence {offer}")
    return 0


def _within(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high`` (else argparse's exit 2)."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high}")
        return value

    return whole


def cmd_status(args: argparse.Namespace) -> int:
    from exchange.kit.addresses import address_refusal
    from exchange.licenses.service import block_at

    pool = _pool(args)
    refusal = address_refusal(args.address)
    if refusal is not None:
        raise CliError(f"{args.address!r} {refusal}")
    block, _ = block_at(pool, args.block)  # refused past the head or before the deployment
    licence = pool.licence(args.address, block=block)
    tier = licence.member_tier
    print(f"{licence.holder} at block {block}: {'LICENSED' if licence.licensed else 'not licensed'}")
    print(f"  kind {licence.kind.name.lower()}, tier {tier.name.lower() if tier is not None else '-'}")
    print(f"  locked {licence.locked_bpc_wei} BPC base units, since block {licence.since_block or '-'}")
    print(f"  expires at {licence.expires_at or 'never'}")
    return 0 if licence.licensed else 1


def _read_certificate(path: Path) -> tuple[Any, bytes]:
    from exchange.licenses.barcodes import BarcodeNotFound, UnreadableImage, decode_one
    from exchange.licenses.certificates import COMPACT_PREFIX, Certificate
    from exchange.licenses.service import parse_signature

    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace").strip()
    if text.startswith(COMPACT_PREFIX):
        return Certificate.from_compact(text)
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{path} is not a certificate: its JSON is malformed: {exc}") from None
        if "compact" in body:
            return Certificate.from_compact(str(body["compact"]))
        if "certificate" not in body or "signature" not in body:
            raise CliError('the JSON holds {"certificate": …, "signature": …} or {"compact": …}')
        return Certificate.from_typed_data(body["certificate"]), parse_signature(str(body["signature"]))
    try:
        return Certificate.from_compact(decode_one(data))
    except (UnreadableImage, BarcodeNotFound) as exc:
        raise CliError(
            f"{path} is neither a certificate (JSON, BPCERT1: text) nor a QR code image: {exc}"
        ) from None


def _shown(text: str) -> str:
    """``text`` from a certificate, with what a terminal would act on (a line feed, an escape
    sequence that clears the screen or hides the verdict) written out instead."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def cmd_verify_cert(args: argparse.Namespace) -> int:
    from exchange.licenses.service import verify_on_chain

    certificate, signature = _read_certificate(args.file)
    pool = _pool(args)
    result = verify_on_chain(pool, certificate, signature, args.block)
    at = f"block {result.licence.block} (time {result.licence.block_timestamp})"
    print(f"holder {certificate.holder}, signed by {result.signer or 'no key'}, checked at {at}")
    print(f"statement: {_shown(certificate.statement)}")
    if not result.reasons:
        print("VALID")
        return 0
    print("INVALID")
    for reason in result.reasons:
        print(f"  {reason.code.value}: {reason.message}")
    return 1


def _proof_from_service(service: str, device: Any) -> dict[str, Any]:
    from urllib.parse import quote

    import httpx

    url = f"{service.rstrip('/')}/v1/devices/{device.scheme}/{quote(device.canonical, safe='')}"
    reply = httpx.get(url, headers={"Accept": "application/json"}, timeout=30)
    if reply.status_code != 200:
        raise CliError(f"the service answered {reply.status_code}: {reply.text[:300]}")
    answer: dict[str, Any] = reply.json()
    return answer


def _proof_from_batch(directory: Path, device: Any, pool: Any, manufacturer: str | None) -> dict[str, Any]:
    from exchange.licenses.merkle import MerkleTree

    info = json.loads((directory / "batch.json").read_text(encoding="utf-8"))
    with (directory / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        index = next(
            (int(row["index"]) for row in csv.DictReader(handle) if row["device_id"] == device.canonical),
            None,
        )
    manufacturer = manufacturer or info.get("manufacturer")
    # The pool the export was made for, if the service made it (an export of ids alone names none).
    exported_for = {"registry": info.get("registry"), "chain_id": info.get("chain_id")}
    if index is None:
        why = f"the device is not in the batch exported to {directory}"
        return {
            "status": "unknown",
            "batch_id": None,
            "manufacturer": manufacturer,
            "why": why,
            **exported_for,
        }
    tree = MerkleTree.from_bytes((directory / "tree.bin").read_bytes())
    batch_id = info.get("batch_id") or _find_batch(pool, tree.root, tree.count, manufacturer)
    by = f" by {manufacturer}" if manufacturer else ""
    return {
        "why": f"no batch of root 0x{tree.root.hex()} and {tree.count} devices is registered{by}",
        "batch_id": batch_id,
        "index": index,
        "proof": ["0x" + node.hex() for node in tree.proof(index)],
        "root": "0x" + tree.root.hex(),
        "manufacturer": manufacturer,  # who must have registered it (None: whoever did)
        **exported_for,
    }


def _find_batch(pool: Any, root: bytes, count: int, manufacturer: str | None) -> int | None:
    """The first on-chain batch of `manufacturer` registered with `root` and `count` devices (the
    export predates the registration).

    Anyone can register a root they have seen: a batch of someone else's devices registered by
    another account (its revocations and suspension are that account's) must not pass for the
    manufacturer's own. Without a manufacturer, batches of one account only are taken; batches
    of several are refused, naming them.
    """
    from exchange.licenses.indexer import batch_registrations

    found = [
        (int(args["batchId"]), str(args["manufacturer"]))
        for args in batch_registrations(pool, pool.deployment.deploy_block, manufacturer=manufacturer)
        if bytes(args["root"]) == root and int(args["deviceCount"]) == count
    ]
    makers = sorted({maker for _, maker in found})
    if len(makers) > 1:
        listed = ", ".join(f"batch {batch_id} by {maker}" for batch_id, maker in found)
        raise CliError(f"several accounts registered this batch's root ({listed}): give --manufacturer")
    return found[0][0] if found else None


def cmd_scan(args: argparse.Namespace) -> int:
    from exchange.licenses.barcodes import BarcodeNotFound, UnreadableImage, decode_one
    from exchange.licenses.certificates import COMPACT_PREFIX
    from exchange.licenses.device_ids import parse_digital_link
    from exchange.licenses.merkle import verify_proof

    try:
        text = decode_one(args.image.read_bytes())
    except (UnreadableImage, BarcodeNotFound) as exc:
        raise CliError(f"{args.image}: {exc}") from None
    if text.startswith(COMPACT_PREFIX):
        raise CliError(
            f"{args.image} holds a licence certificate, not a device's code: check it with "
            "`exchange licence verify-cert`"
        )
    device = parse_digital_link(text)
    pool = _pool(args)
    print(f"device {device.canonical}")
    print(f"  id hash 0x{device.id_hash.hex()}")
    claim = (
        _proof_from_service(args.service, device)
        if args.service
        else _proof_from_batch(args.batch, device, pool, args.manufacturer)
    )
    _same_registry(claim, pool, "the service" if args.service else str(args.batch / "batch.json"))
    if claim.get("batch_id") is None:
        print(f"NOT LICENSED: {claim.get('why') or 'the service knows no registered batch of it'}")
        return 1
    block = int(pool.w3.eth.block_number)
    batch_id, index = int(claim["batch_id"]), int(claim["index"])
    proof = [bytes.fromhex(node[2:]) for node in claim["proof"]]
    # The chain's own record of the batch: the root the proof must lead to, maker, BPC per device.
    manufacturer, count, _revoked, _status, root, bpc_per_device, registered = pool.devices.call(
        "batchOf", batch_id, block=block
    )
    status = int(pool.devices.call("deviceStatus", batch_id, index, device.id_hash, proof, block=block))
    print(f"  batch {batch_id} on chain: manufacturer {manufacturer}, {count} devices, block {registered}")
    print(f"  {bpc_per_device} BPC base units embedded per device; device index {index}")
    leads = (
        "leads" if verify_proof(bytes(root), index, device.id_hash, proof, int(count)) else "does NOT lead"
    )
    print(f"  proof of {len(proof)} hashes {leads} to the on-chain root 0x{bytes(root).hex()}")
    verdict = DEVICE_STATUS_NAMES[status] if status < len(DEVICE_STATUS_NAMES) else f"status {status}"
    expected = args.manufacturer if args.service else claim.get("manufacturer")
    if status == 0 and expected is not None and manufacturer.lower() != str(expected).lower():
        # Anyone can register a root they have seen: the batch named (by the service, or the id
        # batch.json recorded) must be the manufacturer's own.
        status, verdict = -1, f"batch {batch_id} was registered by {manufacturer}, not by {expected}"
    print(
        f"{'LICENSED' if status == 0 else 'NOT LICENSED: ' + verdict} (DeviceLicenses "
        f"{pool.devices.address}, chain {pool.deployment.chain_id}, block {block})"
    )
    return 0 if status == 0 else 1


def _same_registry(claim: dict[str, Any], pool: Any, source: str) -> None:
    """Refuse a claim about another pool's registry than the manifest's: its batch ids name other
    batches here (or none, which the chain answers as an empty batch)."""
    registry, chain_id = claim.get("registry"), claim.get("chain_id")
    if registry is None:
        return  # an export of ids alone records none
    here = (pool.devices.address.lower(), pool.deployment.chain_id)
    if (str(registry).lower(), int(chain_id) if chain_id is not None else here[1]) != here:
        raise CliError(
            f"{source} names DeviceLicenses {registry} on chain {chain_id}, the manifest "
            f"{pool.devices.address} on chain {pool.deployment.chain_id}: give that pool's manifest"
        )


def _export_devices(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from exchange.licenses.uploads import parse_csv, parse_json_list

    if args.ids:
        text = args.ids.read_text(encoding="utf-8-sig")
        if args.ids.suffix.lower() == ".json":
            return parse_json_list(json.loads(text), scheme=args.scheme), {}
        return parse_csv(text, scheme=args.scheme), {}
    import httpx

    from exchange.licenses.device_ids import parse_canonical

    if not (args.service and args.upload_id is not None and args.token):
        raise CliError("give --ids FILE, or --service URL with --upload-id N and --token TOKEN")
    headers = {"Authorization": f"Bearer {args.token}"}
    base = f"{args.service.rstrip('/')}/v1/devices/batches/{args.upload_id}"
    with httpx.Client(headers=headers, timeout=120) as client:
        batch = client.get(base)
        if batch.status_code != 200:
            raise CliError(f"the service answered {batch.status_code}: {batch.text[:300]}")
        info = batch.json()
        ids: list[str] = []
        while len(ids) < info["device_count"]:
            page = client.get(f"{base}/devices", params={"offset": len(ids)}).json()["device_ids"]
            if not page:
                raise CliError("the service returned fewer devices than the batch holds")
            ids.extend(page)
    return [parse_canonical(device_id) for device_id in ids], info


def cmd_devices_export(args: argparse.Namespace) -> int:
    from exchange.licenses.barcodes import ALL_FORMATS, export_batch
    from exchange.licenses.device_ids import digital_link
    from exchange.licenses.merkle import MerkleTree

    devices, info = _export_devices(args)
    try:  # the base is checked once, before anything is written
        digital_link(devices[0], args.resolver_base)
    except ValueError as exc:
        raise CliError(f"--resolver-base: {exc}") from None
    tree = MerkleTree.build([device.id_hash for device in devices])
    if info and info["root"] != "0x" + tree.root.hex():
        raise CliError(f"the service's devices give root 0x{tree.root.hex()}, not the batch's {info['root']}")
    formats = [fmt for fmt in ALL_FORMATS if fmt.column in set(args.formats.split(","))]
    if not formats:
        raise CliError(f"--formats names none of {', '.join(fmt.column for fmt in ALL_FORMATS)}")
    if args.out_dir.exists() and (not args.out_dir.is_dir() or any(args.out_dir.iterdir())):
        # Another batch's labels left beside this one's manifest would be printed as its own.
        raise CliError(f"{args.out_dir} is not an empty directory: export each batch into a new one")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "tree.bin").write_bytes(tree.to_bytes())
    batch = {
        "root": "0x" + tree.root.hex(),
        "device_count": tree.count,
        "batch_id": info.get("batch_id"),
        "manufacturer": info.get("manufacturer") or args.manufacturer,
        "registry": info.get("registry"),
        "chain_id": info.get("chain_id"),
        "resolver_base": args.resolver_base,
    }
    (args.out_dir / "batch.json").write_text(json.dumps(batch, indent=2) + "\n", encoding="utf-8")
    manifest = export_batch(
        devices,
        args.out_dir,
        resolver_base=args.resolver_base,
        formats=formats,
        progress=ProgressBar("devices"),
        module_px=args.module_px,
    )
    print(f"{len(devices):,} devices, root {batch['root']}: labels and {manifest.name} in {args.out_dir}")
    return 0


def cmd_resolver(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from exchange.cli import reach_database
    from exchange.db.migrate import SchemaNotReady
    from exchange.licenses.lifespan import NoRegistry, check_served_registry
    from exchange.settings import ENV_PREFIX, get_settings

    if args.workers < 1:
        raise CliError("--workers is at least 1")
    if args.manifest is not None:
        if not args.manifest.is_file():
            raise CliError(f"no manifest at {args.manifest}")
        # Through the environment, which every worker process reads its settings from.
        os.environ[f"{ENV_PREFIX}DEPLOYMENT_MANIFEST"] = str(args.manifest.resolve())
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise CliError(f"invalid configuration:\n{exc}") from None
    unreachable = io.StringIO()
    if not asyncio.run(reach_database(settings.database_url, unreachable, existing=True)):
        raise CliError(unreachable.getvalue().strip().removeprefix("error: "))  # password hidden
    try:
        # Once here, so that a resolver with nothing to serve stops with a reason instead of
        # workers failing their start-up over and over.
        registry = asyncio.run(check_served_registry(settings))
    except (NoRegistry, SchemaNotReady) as exc:
        raise CliError(str(exc)) from None
    print(f"resolving devices of registry {registry.address} on chain {registry.chain_id}", file=sys.stderr)
    uvicorn.run(
        "exchange.licenses.resolver_app:create_resolver_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    return 0


def _os_error(error: OSError) -> str:
    """An OSError in one line: the file it names and why, else its first line."""
    from exchange.kit.errors import error_line

    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return error_line(error)


def _http_error(error: httpx.HTTPError) -> str:
    """An ``httpx.HTTPError`` in one line, naming the URL asked when it is known."""
    from exchange.kit.errors import error_line

    try:
        url = error.request.url
    except RuntimeError:  # an error raised outside a request
        return error_line(error)
    return f"the request to {url} failed: {error_line(error)}"


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler``, whose operator errors end in one line on stderr and exit 2: exit 1 says "invalid"
    or "not licensed", which a file that cannot be read or a service that cannot be reached is not.

    Only what input and the outside world cause is caught (files, JSON and text, the service, the
    node, the database's connection); any other exception (a ValueError or an SQL error among
    them) is a bug and keeps its traceback.
    """

    def run(args: argparse.Namespace) -> int:
        import httpx
        from sqlalchemy.exc import InterfaceError, OperationalError

        from exchange.chain.errors import ChainError
        from exchange.kit.errors import DomainError, error_line

        try:
            return handler(args)
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except DomainError as exc:  # invalid ids, certificates, device lists
            print(f"error: {exc.detail}", file=sys.stderr)
            located = exc.extra.get("errors")
            for entry in located if isinstance(located, list) else []:
                print(f"  {entry}", file=sys.stderr)
            return 2
        except ChainError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a file missing or unreadable; a node or database connection lost
            print(f"error: {_os_error(exc)}", file=sys.stderr)
            return 2
        except httpx.HTTPError as exc:  # the service did not answer
            print(f"error: {_http_error(exc)}", file=sys.stderr)
            return 2
        except (OperationalError, InterfaceError) as exc:  # the resolver's database, once reached
            print(f"error: the database failed: {error_line(exc.orig or exc)}", file=sys.stderr)
            return 2
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a malformed file or answer
            print(f"error: {error_line(exc)}", file=sys.stderr)
            return 2

    return run


def add_commands(sub: Any) -> None:
    """Register ``licence`` and its subcommands on the ``exchange`` command's subparsers."""
    from exchange.cli import MANIFEST_HELP, address_type, default_manifest

    licence = sub.add_parser(
        "licence",
        help="licences, certificates and devices, checked on chain",
        description="Licences, certificates and devices, checked on chain. Exit 0 valid or licensed, "
        "1 invalid or not licensed, 2 when the check cannot be made (bad input, a file missing or "
        "malformed, a service, node or database that cannot be reached).",
    )
    commands = licence.add_subparsers(dest="licence_command", required=True)
    manifest = default_manifest()

    def chain_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--rpc", default=os.environ.get("CHAIN_RPC_URL"), help="JSON-RPC URL ($CHAIN_RPC_URL)"
        )
        parser.add_argument("--manifest", type=Path, default=manifest, help=MANIFEST_HELP)

    threshold = commands.add_parser("threshold", help="BPC threshold per tier and fee licence terms")
    chain_options(threshold)
    threshold.set_defaults(handler=_guarded(cmd_threshold))

    status = commands.add_parser("status", help="an address's BPR licence")
    status.add_argument("address")
    status.add_argument("--block", type=int, default=None)
    chain_options(status)
    status.set_defaults(handler=_guarded(cmd_status))

    verify = commands.add_parser(
        "verify-cert", help="verify a licence certificate (JSON, BPCERT1: text or QR image)"
    )
    verify.add_argument("file", type=Path)
    verify.add_argument("--block", type=int, default=None, help="check at this block (default latest)")
    chain_options(verify)
    verify.set_defaults(handler=_guarded(cmd_verify_cert))

    scan = commands.add_parser("scan", help="decode a device label photo and verify its licence on chain")
    scan.add_argument("image", type=Path)
    source = scan.add_mutually_exclusive_group(required=True)
    source.add_argument("--service", help="licence service URL to fetch the proof from")
    source.add_argument(
        "--batch", type=Path, help="exported batch directory (tree.bin, manifest.csv, batch.json)"
    )
    scan.add_argument(
        "--manufacturer",
        type=address_type,
        help="the account that must have registered the device's batch (a batch another account "
        "registered is no licence): with --batch, the default is batch.json's, if recorded; with "
        "--service, the service's batch is taken whoever registered it unless this is given",
    )
    chain_options(scan)
    scan.set_defaults(handler=_guarded(cmd_scan))

    resolver = commands.add_parser(
        "resolver", help="serve the device resolver alone, read-only, in one or more processes"
    )
    resolver.add_argument("--host", help="listen address (default: the service's, EXCHANGE_HOST)")
    resolver.add_argument(
        "--port", type=_within(1, 65_535), help="port (default: the service's, EXCHANGE_PORT)"
    )
    resolver.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    resolver.add_argument(
        "--manifest", type=Path, help="deployment manifest naming the registry (default: the indexed one)"
    )
    resolver.set_defaults(handler=_guarded(cmd_resolver))

    devices = commands.add_parser("devices", help="device batches")
    devices_commands = devices.add_subparsers(dest="devices_command", required=True)
    export = devices_commands.add_parser("export", help="write a batch's labels, manifest and tree")
    export.add_argument("out_dir", type=Path)
    export.add_argument("--ids", type=Path, help="device ids: CSV with a device_id column, or a JSON list")
    export.add_argument("--scheme", help="scheme of ids without a prefix")
    export.add_argument("--service", help="licence service URL (with --upload-id and --token)")
    export.add_argument("--upload-id", type=int)
    export.add_argument(
        "--manufacturer",
        type=address_type,
        help="with --ids: the account that registers the batch, recorded for scan --batch",
    )
    export.add_argument(
        "--token",
        default=os.environ.get("LICENCE_SERVICE_TOKEN"),
        help="bearer token ($LICENCE_SERVICE_TOKEN)",
    )
    export.add_argument(
        "--resolver-base", required=True, help="Digital Link base, e.g. https://id.example.org"
    )
    export.add_argument(
        "--formats",
        default="qr_png,qr_svg,datamatrix_png,datamatrix_svg",
        help="comma-separated: qr_png, qr_svg, datamatrix_png, datamatrix_svg (default all)",
    )
    export.add_argument(
        "--module-px", type=_within(1, 40), default=8, help="pixels per barcode module, 1 to 40 (default 8)"
    )
    export.set_defaults(handler=_guarded(cmd_devices_export))

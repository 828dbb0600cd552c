"""The ``exchange`` command.

Subcommands::

    exchange serve                      run the HTTP service (embedded defaults without configuration)
    exchange compile                    compile the contracts (cached by source hash)
    exchange deploy --rpc URL           deploy the pool contracts and write a deployment manifest
    exchange chain status               check a manifest against the chain
    exchange licence …                  licences, certificates and device labels (exchange.licenses.cli)
    exchange pool patents import FILE   import patents from CSV: all rows or none
    exchange pool expire [--today DAY]  retire the patents that have expired
    exchange settle [--once]            settle pending fills in Vault batches (CHAIN_RPC_URL, manifest)
    exchange audit                      compare the off-chain ledger with the Vault; exit 1 on any difference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from exchange.chain.manifest_defaults import DEFAULT_MANIFEST, MANIFEST_VARIABLE
from exchange.kit.errors import error_line

if TYPE_CHECKING:
    from exchange.settings import Settings

MANIFEST_HELP = f"deployment manifest (default ${MANIFEST_VARIABLE}, else {DEFAULT_MANIFEST})"
LOG_LEVEL_VARIABLE = "EXCHANGE_LOG_LEVEL"  # the service's log_level setting


def default_manifest() -> Path:
    """The deployment manifest a command reads or writes unless given ``--manifest``: the one the
    service's settings name (``deployment_manifest``: ``EXCHANGE_DEPLOYMENT_MANIFEST``), else
    ``deployments/manifest.json``.

    The variable is read alone, by any case as the settings read it, not through the settings:
    these commands use no other setting, and must not be refused over one they do not use (such
    as ``CHAIN_RPC_URL`` without an operator key).
    """
    for name, value in os.environ.items():
        if name.upper() == MANIFEST_VARIABLE and value:
            return Path(value)
    return DEFAULT_MANIFEST


def read_settings(err: TextIO) -> Settings | None:
    """The service's settings from the environment, for a command; None once the reason they are
    invalid is printed on ``err`` (the command then exits 2, as ``exchange serve`` does).

    Never a traceback for a configuration mistake: pydantic's message names the variable and
    the rule, and never echoes a secret.
    """
    from pydantic import ValidationError

    from exchange.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{exc}", file=err)
        return None


async def reach_database(database_url: str, err: TextIO, *, existing: bool = False) -> bool:
    """Whether a connection to ``database_url`` opens, tried before a command's work; when none
    does, one line on ``err`` says why (with the URL's password hidden), and the command exits 2.

    ``existing``: for commands that only read or follow a database the service made, a SQLite
    file that is not there is refused rather than made (connecting would leave an empty file
    behind a mistyped ``DATABASE_URL``).

    Only the connection is judged here: an error in the work itself, once connected (a failing
    migration, a conflicting row), is no reason to call the database unreachable.
    """
    import asyncpg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from exchange.db.engine import create_engine_for_url, sqlite_file

    database_file = sqlite_file(database_url) if existing else None
    if database_file is not None and not database_file.is_file():
        print(
            f"error: no SQLite database at {database_file}: check DATABASE_URL, or start "
            "`exchange serve` on it first",
            file=err,
        )
        return False
    try:
        engine = create_engine_for_url(database_url)  # a SQLite file's folder is made here
        try:
            async with engine.connect():
                return True
        finally:
            await engine.dispose()
    except (OSError, SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        shown = make_url(database_url).render_as_string(hide_password=True)
        print(f"error: cannot reach the database {shown}: {error_line(exc)}", file=err)
        return False


def _progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def cmd_compile(_args: argparse.Namespace) -> int:
    from exchange.chain.compiler import compile_contracts

    artifacts = compile_contracts()
    from exchange.chain.deployment import POOL_CONTRACTS

    for name in POOL_CONTRACTS:
        size = (len(artifacts[name].deployed_bytecode) - 2) // 2
        print(f"{name:<14} {size:>6} bytes of runtime code")
    return 0


def _no_erc20(w3: Any, token: str) -> str | None:
    """Why ``token`` is not a token the Vault can trade against (no code, or no answer to the
    ERC-20 reads the service makes at start), else None: the contracts cannot be pointed at
    another token once deployed."""
    from web3.exceptions import Web3Exception

    try:
        if not w3.eth.get_code(token):
            return "has no contract code on this chain"
        for selector, name in ((b"\x31\x3c\xe5\x67", "decimals()"), (b"\x95\xd8\x9b\x41", "symbol()")):
            if not w3.eth.call({"to": token, "data": selector}):
                return f"answers nothing to {name}: it is not an ERC-20 token"
    except (Web3Exception, ValueError) as exc:
        return f"cannot be read as an ERC-20 token ({error_line(exc)})"
    return None


def address_type(text: str) -> str:
    """An argparse type of every command: ``text`` as its checksummed address (``kit.addresses``,
    imported when first used: the command line starts without it)."""
    from exchange.kit.addresses import checked_address

    try:
        return checked_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_deploy(args: argparse.Namespace) -> int:
    from eth_account import Account
    from web3.exceptions import Web3Exception

    from exchange.chain.deployment import RolePlan, deploy_pool
    from exchange.chain.errors import ChainError
    from exchange.chain.provider import make_web3

    if args.with_test_quote_token == (args.quote_token is not None):
        print("error: give exactly one of --quote-token ADDRESS and --with-test-quote-token", file=sys.stderr)
        return 2
    key = (os.environ.get("EXCHANGE_OPERATOR_PRIVATE_KEY") or "").strip() or None
    if key is not None:
        try:
            Account.from_key(key)
        except (ValueError, TypeError):  # never echo the key itself
            print(
                "error: EXCHANGE_OPERATOR_PRIVATE_KEY is not a secp256k1 private key (64 hex digits)",
                file=sys.stderr,
            )
            return 2
    try:
        w3 = make_web3(args.rpc, operator_key=key)
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Once a chain answers (so that a refusal for another reason makes no folder), and before any
    # transaction is paid for: a manifest that cannot be written would leave no record of the pool.
    from exchange.chain.deployment import manifest_unwritable

    unwritable = manifest_unwritable(args.manifest)
    if unwritable is not None:
        print(f"error: cannot write the manifest to {args.manifest}: {unwritable}", file=sys.stderr)
        return 2
    if args.quote_token is not None:
        refusal = _no_erc20(w3, args.quote_token)
        if refusal is not None:
            print(f"error: --quote-token {args.quote_token} {refusal}; nothing was deployed", file=sys.stderr)
            return 2
    print(f"deploying to chain {w3.eth.chain_id} from {w3.eth.default_account}", file=sys.stderr)
    try:
        deployment = deploy_pool(
            w3,
            roles=RolePlan(registrar=args.registrar, minter=args.minter, treasurer=args.treasurer),
            with_quote_token=args.with_test_quote_token,
            quote_token=args.quote_token,
            progress=_progress,
        )
    except (ChainError, Web3Exception, OSError) as exc:  # the node failed, refused or timed out midway
        # No manifest (the pool is incomplete); what was deployed is in the progress lines above.
        print(
            f"error: the deployment stopped: {error_line(exc)}; no manifest was written, and the "
            "contracts deployed before it are the `deployed …` lines above",
            file=sys.stderr,
        )
        return 1
    # The addresses go out first: should writing the manifest fail even so, they are not lost.
    print(json.dumps(deployment.to_json(), indent=2, sort_keys=True), flush=True)
    try:
        deployment.write(args.manifest)
    except OSError as exc:
        print(
            f"error: the pool is deployed (its manifest is on stdout), but writing {args.manifest} "
            f"failed: {error_line(exc)}",
            file=sys.stderr,
        )
        return 1
    print(f"manifest written to {args.manifest}", file=sys.stderr)
    return 0


def cmd_chain_status(args: argparse.Namespace) -> int:
    from exchange.chain.deployment import Deployment, check_deployment
    from exchange.chain.errors import ChainError, ChainUnavailable, ManifestInvalid
    from exchange.chain.provider import make_web3

    if not args.manifest.is_file():
        print(f"error: no manifest at {args.manifest}", file=sys.stderr)
        return 2
    if not args.rpc:
        print(
            "error: give --rpc URL or set CHAIN_RPC_URL: the embedded chain lives only inside "
            "`exchange serve`",
            file=sys.stderr,
        )
        return 2
    try:
        deployment = Deployment.read(args.manifest)
    except ManifestInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        w3 = make_web3(args.rpc)
        statuses = check_deployment(w3, deployment)
    except ChainUnavailable as exc:  # nothing was checked
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ChainError as exc:  # the node is another chain than the manifest's
        print(f"error: {exc}", file=sys.stderr)
        return 1
    head = w3.eth.block_number
    print(f"chain {deployment.chain_id}, deployed at block {deployment.deploy_block}, head {head}")
    for status in statuses:
        mark = "ok  " if status.ok else "FAIL"
        print(f"{mark} {status.name:<14} {status.address}  {status.reason}")
    return 0 if all(s.ok for s in statuses) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from exchange.main import serve

    serve(host=args.host, port=args.port)
    return 0


def cmd_pool_patents_import(args: argparse.Namespace) -> int:
    from exchange.pool.cli_service import import_file

    return import_file(args.file, actor=args.actor)


def cmd_pool_expire(args: argparse.Namespace) -> int:
    from exchange.pool.cli_service import expire

    return expire(args.today)


def cmd_settle(args: argparse.Namespace) -> int:
    from exchange.trading.settlement_service import settle_command

    settings = read_settings(sys.stderr)
    if settings is None:
        return 2
    return settle_command(settings, once=args.once, poll_s=args.poll)


def cmd_audit(_args: argparse.Namespace) -> int:
    from exchange.trading.settlement_service import audit_command

    settings = read_settings(sys.stderr)
    if settings is None:
        return 2
    return audit_command(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange", description="Patent-pool token exchange")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=None, help="listen address (default from settings)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default from settings)")
    serve.set_defaults(handler=cmd_serve)

    compile_ = sub.add_parser("compile", help="compile the Solidity contracts")
    compile_.set_defaults(handler=cmd_compile)

    deploy = sub.add_parser(
        "deploy",
        help="deploy the pool contracts to a JSON-RPC chain",
        description="Deploy the pool contracts and write their manifest, printed on stdout too. "
        "Exit 2 before any transaction is sent (bad input, no chain answers, the manifest cannot be "
        "written there); 1 when the deployment stopped midway (the contracts deployed until then are "
        "its `deployed` progress lines), or the manifest could not be "
        "written after it (the addresses are then only on stdout).",
    )
    deploy.add_argument("--rpc", required=True, help="JSON-RPC URL, e.g. http://127.0.0.1:8545")
    deploy.add_argument(
        "--manifest",
        type=Path,
        default=default_manifest(),
        help=f"where to write the manifest (default ${MANIFEST_VARIABLE}, else {DEFAULT_MANIFEST})",
    )
    deploy.add_argument(
        "--registrar", type=address_type, help="address receiving the registrar and revoker roles"
    )
    deploy.add_argument("--minter", type=address_type, help="address receiving the BPC minter role")
    deploy.add_argument("--treasurer", type=address_type, help="address receiving the fund treasurer role")
    deploy.add_argument(
        "--quote-token", type=address_type, help="address of the stablecoin the Vault trades BPC against"
    )
    deploy.add_argument(
        "--with-test-quote-token",
        action="store_true",
        help="also deploy a mintable test stablecoin (dev chains)",
    )
    deploy.set_defaults(handler=cmd_deploy)

    chain = sub.add_parser("chain", help="chain inspection")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True)
    status = chain_sub.add_parser(
        "status",
        help="check the deployment manifest against the chain",
        description="Compare the code at every address of the manifest with this version's contracts. "
        "Exit 0 when all match; 1 when any differs or the node is another chain; 2 when nothing "
        "could be checked (no manifest, an unreadable one, no --rpc, no chain answers).",
    )
    status.add_argument("--manifest", type=Path, default=default_manifest(), help=MANIFEST_HELP)
    status.add_argument(
        "--rpc", default=os.environ.get("CHAIN_RPC_URL"), help="JSON-RPC URL (default $CHAIN_RPC_URL)"
    )
    status.set_defaults(handler=cmd_chain_status)

    pool = sub.add_parser("pool", help="pool administration on the configured database (DATABASE_URL)")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True)
    patents = pool_sub.add_parser("patents", help="patents of the pool")
    patents_sub = patents.add_subparsers(dest="patents_command", required=True)
    patents_import = patents_sub.add_parser("import", help="import patents from a CSV file: all rows or none")
    patents_import.add_argument(
        "file", type=Path, help="CSV with a header row (see exchange.pool.import_service)"
    )
    patents_import.add_argument(
        "--actor", default="import", help="who imports, for the audit log (cli:<actor>)"
    )
    patents_import.set_defaults(handler=cmd_pool_patents_import)
    expire = pool_sub.add_parser("expire", help="retire, as expired, every patent whose expiry date has come")
    expire.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        help="sweep as of this day, YYYY-MM-DD (default today)",
    )
    expire.set_defaults(handler=cmd_pool_expire)

    settle = sub.add_parser(
        "settle",
        help="settle pending fills in Vault.settle batches",
        description="Settle pending fills in Vault.settle batches, beside `exchange serve`. Exit 2 "
        "when it cannot start: an invalid configuration, no chain or manifest, a database that "
        "cannot be reached, has no schema or another version's, or belongs to another chain.",
    )
    settle.add_argument(
        "--once",
        action="store_true",
        help="exit when no fill is pending and no batch open (status 3: the ledger and the Vault "
        "disagree; 4: a revert about no fill, such as a missing operator role, blocks settlement)",
    )
    settle.add_argument("--poll", type=float, default=0.5, help="seconds between checks of a sent batch")
    settle.set_defaults(handler=cmd_settle)
    audit = sub.add_parser(
        "audit",
        help="compare the off-chain ledger with the Vault's balances on chain",
        description="Print every difference between the off-chain ledger and the Vault's balances. "
        "Exit 0 when they agree, 1 on any difference, 2 when the audit cannot be done: an invalid "
        "configuration, no chain or manifest, a database that cannot be reached, has no schema or "
        "another version's, or belongs to another chain.",
    )
    audit.set_defaults(handler=cmd_audit)

    from exchange.licenses.cli import add_commands as add_licence_commands

    add_licence_commands(sub)
    return parser


def command_log_level() -> str | None:
    """The level a command other than ``serve`` logs at: ``EXCHANGE_LOG_LEVEL`` (its value in any
    case, as the settings take it), else WARNING; None when it names none of the settings' levels.

    Read alone, not through the settings, as ``default_manifest`` reads its variable; but refused
    as the settings refuse it, since logging would fail on it with a traceback.
    """
    from exchange.kit.logging import LOG_LEVELS

    level = os.environ.get(LOG_LEVEL_VARIABLE, "WARNING").upper()
    return level if level in LOG_LEVELS else None


def main(argv: Sequence[str] | None = None) -> int:
    from exchange.kit.logging import LOG_LEVELS, configure_logging

    args = build_parser().parse_args(argv)
    if args.command != "serve":  # the service configures logging from its settings
        level = command_log_level()
        if level is None:
            print(
                f"error: invalid configuration: {LOG_LEVEL_VARIABLE} is none of {', '.join(LOG_LEVELS)}",
                file=sys.stderr,
            )
            return 2
        configure_logging(log_level=level)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())

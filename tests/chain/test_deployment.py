"""Deployment manifests, code checks, error decoding and the chain commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector
from web3 import Web3

from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import (
    DEFAULT_EXIT_DELAY_S,
    ContractRecord,
    Deployment,
    check_deployment,
    deploy_pool,
    error_decoder,
)
from exchange.chain.errors import DeploymentMismatch, ManifestInvalid
from tests.chain.conftest import Chain
from tests.chain.nodes import ROOT, hardhat_node


def test_manifest_round_trip(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    chain.deployment.write(path)
    loaded = Deployment.read(path)
    assert loaded == chain.deployment
    assert loaded.sha256() == chain.deployment.sha256()
    assert loaded.chain_id == chain.w3.eth.chain_id
    assert set(loaded.contracts) == {
        "PoolRegistry",
        "BPC",
        "BPR",
        "Fund",
        "LicenseGate",
        "DeviceLicenses",
        "QuoteToken",
        "Vault",
    }
    assert loaded.roles["BPR.GATE_ROLE"] == loaded.address("LicenseGate")
    assert loaded.roles["Vault.OPERATOR_ROLE"] == loaded.deployer


def test_vault_trades_bpc_against_the_quote_token_and_pays_the_fund(chain: Chain) -> None:
    vault = chain.pool.vault
    assert vault.call("baseToken") == chain.deployment.address("BPC")
    assert vault.call("quoteToken") == chain.deployment.address("QuoteToken")
    assert vault.call("registry") == chain.deployment.address("PoolRegistry")
    assert vault.call("fund") == chain.deployment.address("Fund")
    assert vault.call("exitDelay") == DEFAULT_EXIT_DELAY_S
    assert vault.call("hasRole", vault.call("OPERATOR_ROLE"), chain.deployment.deployer)


def test_deploy_pool_needs_exactly_one_quote_token(chain: Chain) -> None:
    with pytest.raises(ValueError, match="one quote token"):
        deploy_pool(chain.w3, with_quote_token=False)
    with pytest.raises(ValueError, match="one quote token"):
        deploy_pool(chain.w3, quote_token=chain.deployment.address("BPC"))


def test_manifest_rejects_unknown_version() -> None:
    with pytest.raises(ValueError, match="unsupported manifest version"):
        Deployment.from_json({"version": 99})


def test_a_manifest_without_a_contract_or_with_a_bad_address_is_refused(chain: Chain, tmp_path: Path) -> None:
    """Before, a manifest missing the Vault made the service fail with a KeyError at start, and
    ``chain status`` said "ok" for the contracts it did list."""
    whole = chain.deployment.to_json()
    bad_vault = {
        **whole,
        "contracts": {
            **whole["contracts"],
            "Vault": {**whole["contracts"]["Vault"], "address": "not-an-address"},
        },
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(bad_vault))
    with pytest.raises(ManifestInvalid, match="the address of Vault, 'not-an-address', is not an address"):
        Deployment.read(path)
    no_vault = Deployment.from_json(
        {**whole, "contracts": {k: v for k, v in whole["contracts"].items() if k != "Vault"}}
    )
    failed = [(s.name, s.reason) for s in check_deployment(chain.w3, no_vault) if not s.ok]
    assert failed == [("Vault", "not in the manifest")]


def test_check_deployment_accepts_real_code_and_flags_wrong_code(chain: Chain) -> None:
    statuses = check_deployment(chain.w3, chain.deployment)
    assert all(s.ok for s in statuses), statuses
    swapped = dict(chain.deployment.contracts)
    swapped["BPC"], swapped["Fund"] = swapped["Fund"], swapped["BPC"]
    swapped["BPR"] = ContractRecord(
        address="0x" + "11" * 20, abi_sha256=swapped["BPR"].abi_sha256, deploy_tx="0x"
    )
    wrong = Deployment(
        chain.deployment.chain_id, chain.deployment.deploy_block, chain.deployment.deployer, swapped
    )
    by_name = {s.name: s for s in check_deployment(chain.w3, wrong)}
    assert by_name["BPC"].reason == "code differs from compiled contract"
    assert by_name["BPR"].reason == "no code at address"
    assert by_name["LicenseGate"].ok
    other_chain = Deployment(1, 0, chain.deployment.deployer, chain.deployment.contracts)
    with pytest.raises(DeploymentMismatch, match="manifest is for chain 1"):
        check_deployment(chain.w3, other_chain)


def test_error_decoder_names_custom_errors_and_builtins() -> None:
    decoder = error_decoder(compile_contracts())
    account = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"
    data = function_signature_to_4byte_selector("GateBelowThreshold(address,uint256,uint256)") + encode(
        ["address", "uint256", "uint256"], [account, 5, 7]
    )
    reverted = decoder.decode("0x" + data.hex(), "LicenseGate")
    assert reverted.error_name == "GateBelowThreshold"
    assert reverted.error_args == {"account": account, "amount": 5, "threshold": 7}
    assert str(reverted) == f"LicenseGate: GateBelowThreshold(account='{account}', amount=5, threshold=7)"
    text = function_signature_to_4byte_selector("Error(string)") + encode(["string"], ["nope"])
    assert decoder.decode(text).error_args == {"message": "nope"}
    assert decoder.decode("0xdeadbeef").error_name == "Unknown"
    assert decoder.decode(None).error_name == "Unknown"


@pytest.mark.hardhat
def test_deploy_and_status_commands(hardhat_url: str, tmp_path: Path) -> None:
    manifest = tmp_path / "deployments" / "manifest.json"
    exe = [sys.executable, "-m", "exchange.cli"]
    refused = subprocess.run(
        [*exe, "deploy", "--rpc", hardhat_url, "--manifest", str(manifest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "--quote-token" in refused.stderr
    deployed = subprocess.run(
        [*exe, "deploy", "--rpc", hardhat_url, "--manifest", str(manifest), "--with-test-quote-token"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "deploying LicenseGate" in deployed.stderr
    assert "granting Vault.OPERATOR_ROLE" in deployed.stderr
    written = json.loads(manifest.read_text())
    assert written["chain_id"] == 31337
    assert json.loads(deployed.stdout) == written
    status = subprocess.run(
        [*exe, "chain", "status", "--rpc", hardhat_url, "--manifest", str(manifest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("ok  ") == 8
    written["contracts"]["BPC"]["address"] = written["contracts"]["Fund"]["address"]
    manifest.write_text(json.dumps(written))
    broken = subprocess.run(
        [*exe, "chain", "status", "--rpc", hardhat_url, "--manifest", str(manifest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 1
    assert "FAIL BPC" in broken.stdout


COMMAND = [sys.executable, "-m", "exchange.cli"]


@pytest.mark.hardhat
def test_a_deployment_that_stops_midway_leaves_the_addresses_it_paid_for(tmp_path: Path) -> None:
    """The node goes away after the first contract: the command exits 1, writes no manifest, and
    its progress lines name every contract deployed before the stop, with its address."""
    manifest = tmp_path / "manifest.json"
    with hardhat_node() as url:
        deploying = subprocess.Popen(
            [*COMMAND, "deploy", "--rpc", url, "--manifest", str(manifest), "--with-test-quote-token"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert deploying.stderr is not None
        lines: list[str] = []
        for line in deploying.stderr:
            lines.append(line.rstrip("\n"))
            if "deployed PoolRegistry at" in line:
                deploying.send_signal(signal.SIGSTOP)  # held until the node is gone
                break
    deploying.send_signal(signal.SIGCONT)
    _, rest = deploying.communicate(timeout=120)
    lines += rest.splitlines()
    assert deploying.returncode == 1, "\n".join(lines)
    assert not manifest.exists()
    (deployed,) = [line for line in lines if "deployed PoolRegistry at" in line]
    assert Web3.is_checksum_address(deployed.split(" at ")[1])
    (sending,) = [line for line in lines if "deploying PoolRegistry in transaction 0x" in line]
    assert len(sending.split()[-1]) == 66  # its hash, known before its receipt
    assert lines[-1].startswith("error: the deployment stopped: ")
    assert "the contracts deployed before it are the `deployed …` lines above" in lines[-1]
    assert "Traceback" not in rest

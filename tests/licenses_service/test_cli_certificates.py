"""``exchange licence verify-cert --block N`` against a Hardhat node: a contract wallet's ERC-1271
answer is the one it gave at that block, as the licence is."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from exchange.chain.deployment import deploy_pool
from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3
from exchange.chain.signatures import eip191_hash
from exchange.cli import main
from exchange.licenses.certificates import Certificate
from tests.chain.nodes import hardhat_node
from tests.licenses_service.test_certificates import licensed_wallet

pytestmark = pytest.mark.hardhat

# Hardhat's default development account 3 (a public test key of the "test … junk" mnemonic),
# unlocked on the node: it owns the wallet and signs for it.
OWNER_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = main([str(part) for part in argv])
    return code, capsys.readouterr().out


def test_verify_cert_asks_a_contract_wallet_at_the_block_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = Account.from_key(OWNER_KEY)
    with hardhat_node() as url:
        w3 = make_web3(url)
        deployment = deploy_pool(w3)
        manifest = tmp_path / "manifest.json"
        deployment.write(manifest)
        pool = PoolChain(w3, deployment)
        wallet, _ = licensed_wallet(pool, "ERC1271ApprovingWallet", owner.address)
        wallet_address = wallet.address
        licensed = int(w3.eth.block_number)
        now = int(w3.eth.get_block("latest")["timestamp"])
        cert = Certificate(
            chain_id=deployment.chain_id,
            verifying_contract=pool.bpr.address,
            holder=wallet_address,
            pool=pool.registry.address,
            statement="licensed",
            issued_at=now - 10,
            expires_at=now + 3_600,
            nonce=3,
        )
        compact = tmp_path / "wallet.txt"
        compact.write_text(cert.to_compact(bytes(owner.sign_message(cert.signable()).signature)))
        approve = wallet.functions.setApproval(eip191_hash(cert.signable()), True)
        approved = int(
            w3.eth.wait_for_transaction_receipt(approve.transact({"from": owner.address}))["blockNumber"]
        )
        assert approved > licensed
        chain: list[str | Path] = ["--rpc", url, "--manifest", manifest]

        code, out = run(capsys, "licence", "verify-cert", compact, *chain)
        assert code == 0, out
        assert f"checked at block {approved} " in out
        assert "VALID" in out
        code, out = run(capsys, "licence", "verify-cert", compact, *chain, "--block", str(licensed))
        assert code == 1, out
        assert f"checked at block {licensed} " in out
        assert "signer_not_holder" in out
        assert "holder_not_licensed" not in out
        code, out = run(capsys, "licence", "verify-cert", compact, *chain, "--block", str(approved))
        assert code == 0, out

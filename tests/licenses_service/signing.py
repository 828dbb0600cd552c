"""Sign-In with Ethereum for a blocking client (the tests that talk to a service over a socket)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from exchange.auth.siwe import SiweMessage


def sign_in(client: httpx.Client, account: LocalAccount) -> dict[str, str]:
    """Bearer headers of a fresh session for `account`."""
    issued = client.post("/v1/auth/nonce").json()
    text = SiweMessage(
        domain=issued["domain"],
        address=account.address,
        uri=f"http://{issued['domain']}/",
        chain_id=issued["chain_id"],
        nonce=issued["nonce"],
        issued_at=datetime.now(UTC).replace(microsecond=0),
    ).render()
    signature = "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()
    reply = client.post("/v1/auth/login", json={"message": text, "signature": signature})
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}

"""Build a Web3 instance for a target chain.

The embedded default is an in-process py-evm chain (``EthereumTesterProvider``),
whose accounts are unlocked. A JSON-RPC URL selects a real node: a Hardhat node
(unlocked dev accounts) or any network, where an operator key signs locally.
The provider can be injected, the way httpx takes a transport, so tests choose
the chain.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder
from web3.providers.base import BaseProvider

from exchange.chain.errors import ChainUnavailable

CACHED_REQUESTS = {"eth_chainId", "eth_accounts"}
"""Answers that do not change for a node's life, which web3 asks again around calls (the chain
id twice for every contract read): kept by the provider, a read is one request instead of three.
A node swapped for another chain's is found at start (the chain anchor), not here."""


def make_web3(
    rpc_url: str | None = None,
    *,
    provider: BaseProvider | None = None,
    operator_key: str | None = None,
    timeout_s: float = 30.0,
) -> Web3:
    """A connected Web3: `provider` if given, else `rpc_url`, else the embedded EVM."""
    if provider is None:
        provider = (
            HTTPProvider(
                rpc_url,
                request_kwargs={"timeout": timeout_s},
                cache_allowed_requests=True,
                cacheable_requests=CACHED_REQUESTS,
            )
            if rpc_url
            else EthereumTesterProvider()
        )
    w3 = Web3(provider)
    if not w3.is_connected():
        raise ChainUnavailable(f"no chain answers at {rpc_url or 'the embedded provider'}")
    if operator_key:
        account: LocalAccount = Account.from_key(operator_key)
        w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)
        w3.eth.default_account = account.address
    else:
        accounts = w3.eth.accounts
        if not accounts:
            raise ChainUnavailable("the node has no unlocked accounts and no operator key was given")
        w3.eth.default_account = accounts[0]
    return w3

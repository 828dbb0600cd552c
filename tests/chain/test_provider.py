"""What the service asks a JSON-RPC node: a contract read is one request."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3
from tests.chain.conftest import Chain


@pytest.fixture
def requested(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The JSON-RPC methods sent over HTTP while the test runs."""
    methods: list[str] = []
    post = requests.Session.post

    def counting_post(self: requests.Session, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        body = json.loads(data)
        methods.extend(entry["method"] for entry in (body if isinstance(body, list) else [body]))
        return post(self, url, data=data, **kwargs)

    monkeypatch.setattr(requests.Session, "post", counting_post)
    return methods


@pytest.mark.hardhat
def test_a_contract_read_is_one_request(hardhat_chain: Chain, hardhat_url: str, requested: list[str]) -> None:
    pool = PoolChain(make_web3(hardhat_url), hardhat_chain.deployment)
    supply = pool.bpc_supply()
    requested.clear()
    for _ in range(5):
        assert pool.bpc_supply() == supply
    assert requested == ["eth_call"] * 5

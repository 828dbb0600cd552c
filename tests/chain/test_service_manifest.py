"""The manifest a service on a JSON-RPC chain keeps its pool in: the configured one, else
``deployments/manifest.json`` in the working directory, as the commands' default. The first start
deploys and writes it, later starts load the same pool; the embedded chain writes none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3

from exchange.api.app import create_app
from exchange.chain.deployment import Deployment
from exchange.chain.errors import ChainReplaced, ManifestInvalid
from exchange.chain.lifespan import chain_startup
from exchange.chain.routes import router as chain_router
from exchange.settings import Settings

DEFAULT_MANIFEST = Path("deployments/manifest.json")


async def _served_pool(settings: Settings) -> dict[str, Any]:
    """Start a service's chain side on ``settings``; the pool it serves (``GET /v1/contracts``)."""
    app = create_app(settings, routers=[chain_router], lifespan_hooks=[chain_startup()])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        reply = await client.get("/v1/contracts")
    assert reply.status_code == 200, reply.text
    pool: dict[str, Any] = reply.json()
    return pool


def _addresses(pool: dict[str, Any]) -> dict[str, str]:
    return {contract["name"]: contract["address"] for contract in pool["contracts"]}


@pytest.fixture
def working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: where the default manifest is looked for and written."""
    directory = tmp_path / "service"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def node_settings(database_url: str, hardhat_url: str, working_dir: Path) -> Settings:
    """A service on the test's database and the Hardhat node, no manifest configured."""
    return Settings(
        database_url=database_url, chain_rpc_url=hardhat_url, dev_accounts=True, log_format="console"
    )


def _sent_by_deployer(hardhat_url: str) -> int:
    """How many transactions the node's first account (the service's deployer) has sent."""
    w3 = Web3(Web3.HTTPProvider(hardhat_url))
    return w3.eth.get_transaction_count(w3.eth.accounts[0])


@pytest.mark.hardhat
async def test_without_a_configured_manifest_later_starts_serve_the_pool_the_first_one_deployed(
    node_settings: Settings, hardhat_url: str, working_dir: Path
) -> None:
    first = await _served_pool(node_settings)
    sent = _sent_by_deployer(hardhat_url)
    again = await _served_pool(node_settings)  # the same database and node: no ChainReplaced
    assert _addresses(again) == _addresses(first)
    assert again["deploy_block"] == first["deploy_block"]
    assert _sent_by_deployer(hardhat_url) == sent  # nothing deployed

    written = Deployment.read(working_dir / DEFAULT_MANIFEST)
    assert {name: record.address for name, record in written.contracts.items()} == _addresses(first)
    assert written.deploy_block == first["deploy_block"]


@pytest.mark.hardhat
async def test_a_configured_manifest_takes_the_place_of_the_default(
    node_settings: Settings, hardhat_url: str, working_dir: Path, tmp_path: Path
) -> None:
    configured = node_settings.model_copy(update={"deployment_manifest": tmp_path / "pool" / "manifest.json"})
    first = await _served_pool(configured)
    assert _addresses(first) == {
        name: record.address
        for name, record in Deployment.read(tmp_path / "pool" / "manifest.json").contracts.items()
    }
    assert not (working_dir / "deployments").exists()
    sent = _sent_by_deployer(hardhat_url)
    assert _addresses(await _served_pool(configured)) == _addresses(first)
    assert _sent_by_deployer(hardhat_url) == sent


@pytest.mark.hardhat
async def test_a_database_of_a_pool_whose_manifest_is_gone_is_refused_before_deploying(
    node_settings: Settings, hardhat_url: str, working_dir: Path
) -> None:
    await _served_pool(node_settings)
    (working_dir / DEFAULT_MANIFEST).unlink(missing_ok=True)
    sent = _sent_by_deployer(hardhat_url)
    with pytest.raises(ChainReplaced, match=r"no manifest at deployments/manifest\.json"):
        await _served_pool(node_settings)
    assert _sent_by_deployer(hardhat_url) == sent  # the refused start cost no deployment
    assert not (working_dir / DEFAULT_MANIFEST).exists()


@pytest.mark.hardhat
async def test_a_manifest_that_could_not_be_written_is_refused_before_deploying(
    node_settings: Settings, hardhat_url: str, working_dir: Path
) -> None:
    blocked = working_dir / "not-a-directory"
    blocked.write_text("a file where the manifest's directory would be")
    settings = node_settings.model_copy(update={"deployment_manifest": blocked / "manifest.json"})
    sent = _sent_by_deployer(hardhat_url)
    with pytest.raises(ManifestInvalid, match="could not be recorded at"):
        await _served_pool(settings)
    assert _sent_by_deployer(hardhat_url) == sent  # refused before paying for a pool


@pytest.mark.hardhat
async def test_a_manifest_path_that_is_a_directory_is_refused_before_deploying(
    node_settings: Settings, hardhat_url: str, working_dir: Path
) -> None:
    folder = working_dir / "pool"
    folder.mkdir()
    settings = node_settings.model_copy(update={"deployment_manifest": folder})
    sent = _sent_by_deployer(hardhat_url)
    with pytest.raises(
        ManifestInvalid, match="is a directory: EXCHANGE_DEPLOYMENT_MANIFEST names the manifest"
    ):
        await _served_pool(settings)
    assert _sent_by_deployer(hardhat_url) == sent  # before, a whole pool was deployed, then not recorded


async def test_the_embedded_chain_reads_and_writes_no_manifest(
    sqlite_database_url: str, working_dir: Path
) -> None:
    left = working_dir / DEFAULT_MANIFEST
    left.parent.mkdir()
    left.write_text("a manifest of some other chain")
    settings = Settings(database_url=sqlite_database_url, log_format="console")
    assert (await _served_pool(settings))["embedded"] is True
    assert left.read_text() == "a manifest of some other chain"


def test_an_empty_manifest_variable_is_no_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", "")
    assert Settings().deployment_manifest is None

"""Database models. Every model module's classes must be imported here so that
``Base.metadata`` (what Alembic compares against) knows all tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from exchange.db.base import Base, utc_now


class ChainDeployment(Base):
    """A set of contracts the service deployed or loaded on one chain.

    ``manifest`` is the deployment manifest as written by the chain layer
    (addresses, ABIs' hashes, deployer, block); ``manifest_sha256`` is the hash
    of its canonical JSON form, which makes recording the same manifest twice a no-op.
    """

    __tablename__ = "chain_deployments"
    __table_args__ = (
        CheckConstraint("chain_id > 0", name="chain_id_positive"),
        CheckConstraint("deploy_block >= 0", name="deploy_block_not_negative"),
        CheckConstraint("length(manifest_sha256) = 64", name="manifest_sha256_length"),
        Index(None, "chain_id", "deploy_block"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    deploy_block: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    def __repr__(self) -> str:
        return (
            f"ChainDeployment(id={self.id!r}, chain_id={self.chain_id!r}, "
            f"deploy_block={self.deploy_block!r}, manifest_sha256={self.manifest_sha256!r})"
        )


# Models of the domain rooms, imported so that Base.metadata knows their tables.
from exchange.auth.models import AuthNonce, AuthSession  # noqa: E402

__all__ = ["AuthNonce", "AuthSession", "ChainDeployment"]
import exchange.licenses.models  # noqa: E402, F401  (per-device licensing tables)
from exchange.pool import models as pool_models  # noqa: E402, F401  (pool administration tables)
from exchange.trading import models as trading_models  # noqa: E402, F401  (trading journal, fills, ledger)
from exchange.trading import settlement_models  # noqa: E402, F401  (chain indexer and settlement tables)


class ChainAnchor(Base):
    """The chain this database belongs to: one row, written at the first start.

    Everything the service stores (balances, orders, fills, members, licences) describes
    one chain. A chain that was replaced (the embedded EVM at every start, a development
    node restarted and deployed to again) can have the same id and the same contract
    addresses; the hash of the block the pool was deployed in tells it apart.
    """

    __tablename__ = "chain_anchor"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    deploy_block: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

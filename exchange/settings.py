"""Service settings, read once from the environment.

Every field can be set with an environment variable named ``EXCHANGE_<FIELD>``
(``EXCHANGE_LOG_LEVEL``, ``EXCHANGE_PORT``, ...), except the two connection
strings that deployment platforms conventionally provide under fixed names:
``DATABASE_URL`` and ``CHAIN_RPC_URL``.

The settings refuse what would be unsafe or silently ignored:

* unknown keys, including unknown ``EXCHANGE_*`` environment variables, so a
  misspelt variable is an error rather than a default in disguise (the few that
  other parts of the program read, ``VARIABLES_READ_ELSEWHERE``, are known);
* a remote chain (``CHAIN_RPC_URL``) without an operator key, unless the node
  signs for its own unlocked development accounts (``EXCHANGE_DEV_ACCOUNTS``);
* a database driver the service cannot use (only asyncpg and aiosqlite).

Without any configuration the service runs self-contained: a SQLite file under
``var/`` in the working directory and an in-process EVM.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from exchange.kit.addresses import checked_address
from exchange.kit.logging import LogLevel
from exchange.kit.secp256k1 import SECP256K1_N
from exchange.licenses.device_ids import RESOLVER_BASE_MAX_LENGTH

ENV_PREFIX = "EXCHANGE_"
SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"

LogFormat = Literal["auto", "json", "console"]

_PRIVATE_KEY_PATTERN = re.compile(r"(0x)?[0-9a-fA-F]{64}")  # and in [1, n - 1], n the curve order


def default_database_url() -> str:
    """The embedded default: ``var/exchange.sqlite3`` under the current working directory."""
    return f"{SQLITE_DRIVER}:///{Path.cwd() / 'var' / 'exchange.sqlite3'}"


def normalize_database_url(raw_url: str) -> str:
    """Return ``raw_url`` rewritten for the async driver the service uses.

    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://`` and
    ``sqlite://`` becomes ``sqlite+aiosqlite://``; any other driver is refused.
    """
    try:
        url: URL = make_url(raw_url)
    except ArgumentError as error:
        raise ValueError(f"not a database URL: {error}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend in {"postgres", "postgresql"} and driver in {"", "asyncpg"}:
        url = url.set(drivername=POSTGRES_DRIVER)
    elif backend == "sqlite" and driver in {"", "aiosqlite"}:
        url = url.set(drivername=SQLITE_DRIVER)
    else:
        raise ValueError(
            f"unsupported database driver {url.drivername!r}: "
            "use postgresql:// (asyncpg) or sqlite:// (aiosqlite)"
        )
    return url.render_as_string(hide_password=False)


# Connection strings that platforms provide under these exact names, without the prefix.
FIXED_NAME_VARIABLES = {"database_url": "DATABASE_URL", "chain_rpc_url": "CHAIN_RPC_URL"}

# EXCHANGE_* variables that a part of the program reads itself, not being settings of the service:
# known, so not refused as misspelt ones. Each names its reader.
VARIABLES_READ_ELSEWHERE = frozenset(
    {
        "EXCHANGE_PROJECT_ROOT",  # exchange.chain.compiler.project_root: the folder holding contracts/
    }
)


class _FixedNameVariables(PydanticBaseSettingsSource):
    """Reads the fields listed in ``FIXED_NAME_VARIABLES`` from their unprefixed variables."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {
            field_name: os.environ[variable]
            for field_name, variable in FIXED_NAME_VARIABLES.items()
            if variable in os.environ
        }


class _UnknownExchangeVariables(PydanticBaseSettingsSource):
    """Reports every ``EXCHANGE_*`` variable that names no field, so ``extra="forbid"`` rejects it."""

    def __init__(self, settings_cls: type[BaseSettings], known_variables: frozenset[str]) -> None:
        super().__init__(settings_cls)
        self._known_variables = known_variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) and name.upper() not in self._known_variables
        }


class Settings(BaseSettings):
    """Configuration of one service process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
        # Validation errors must not print what they rejected: it may be the operator key.
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL; postgres:// and sqlite:// are rewritten for asyncpg and aiosqlite.",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Apply pending Alembic migrations when the service starts.",
    )
    chain_rpc_url: str | None = Field(
        default=None,
        description="EVM JSON-RPC endpoint; unset means the embedded in-process EVM.",
    )
    operator_private_key: SecretStr | None = Field(
        default=None,
        description="Hex secp256k1 key of the account that deploys contracts and settles trades.",
    )
    dev_accounts: bool = Field(
        default=False,
        description="The RPC node signs for its unlocked dev accounts (a Hardhat node): no key needed.",
    )
    deployment_manifest: Path | None = Field(
        default=None,
        description="Manifest of the pool's contracts on CHAIN_RPC_URL: the service loads it, or deploys the "
        "pool and writes it when the file is missing. Unset: deployments/manifest.json in the working "
        "directory (the licence resolver then serves the indexed registry). The embedded chain keeps none.",
    )
    log_format: LogFormat = Field(
        default="auto",
        description="console on a terminal and JSON otherwise (auto), or forced.",
    )
    log_level: LogLevel = "INFO"
    metrics: bool = Field(
        default=True,
        description="Serve Prometheus metrics at GET /metrics (markets, settlement, WebSocket, process).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics asks for 'Authorization: Bearer <this token>'.",
    )
    otel_telemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's OpenTelemetry instrumentation of requests (spans, metrics, logs through the "
            "providers the process configures). Off by default: with no provider it records nothing "
            "yet still looks its providers up on every request."
        ),
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    siwe_domain: str | None = Field(
        default=None,
        # What a sign-in message's first line can name (exchange.auth.siwe): an authority,
        # host[:port]. A URL here would be handed out as the domain, and no message would match it.
        pattern=r"^[^\s/?#]+$",
        description="The domain Sign-In with Ethereum messages must name, host[:port] without a scheme or "
        "path (default: host:port).",
    )
    siwe_allow_http: bool = Field(
        default=False,
        description="Take sign-in messages for http:// as well as https:// on a domain that is not "
        "this machine's (a development server on a private network); a loopback domain always may.",
    )
    auth_nonce_ttl_s: int = Field(default=300, ge=10, le=3600, description="Lifetime of a sign-in nonce.")
    auth_session_ttl_s: int = Field(
        default=12 * 3600, ge=60, le=30 * 86400, description="Lifetime of a bearer session."
    )
    auth_rate_ip_per_s: float = Field(
        default=5.0,
        gt=0,
        description="Sign-in requests (POST /v1/auth/nonce and /v1/auth/login together) per client IP.",
    )
    auth_rate_ip_burst: int = Field(
        default=50, ge=1, description="Sign-in requests a client IP may send at once before the rate applies."
    )
    chain_read_rate_ip_per_s: float = Field(
        default=20.0,
        gt=0,
        description="Requests per client IP, one bucket for them all, to the public routes that read "
        "the chain on each request (GET /v1/contracts, /v1/licences/thresholds, "
        "/v1/licences/certificates/draft, /v1/licences/{address}, /v1/pool/stats; POST "
        "/v1/licences/certificates/verify), and the certificate QR code (POST "
        "/v1/licences/certificates/qr), which reads nothing but costs drawing time. Each of the "
        "others costs the RPC node one to eleven requests (the thresholds the most: the head block "
        "and its time, and nine eth_calls), so one client costs it at most about 220 a "
        "second: a small share of what a node of one's own serves, and far above what a wallet "
        "checking a licence or a page polling the pool index needs. Lower it for a metered hosted node.",
    )
    chain_read_rate_ip_burst: int = Field(
        default=100,
        ge=1,
        description="Chain-reading public requests a client IP may send at once before the rate "
        "applies: room for a verifier that checks a list of certificates in one go, or several "
        "users behind one address opening the licence pages together.",
    )
    request_body_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body of any route without a limit of its own (413 above).",
    )
    device_upload_body_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest device batch upload (POST /v1/devices/batches: up to a million ids).",
    )
    # --- pool administration (exchange.pool) ---------------------------------------------------
    council_addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated EIP-55 addresses holding the council role (granted at start-up,"
        " unless the council revoked it since).",
    )
    registrar_addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated EIP-55 addresses holding the registrar role (granted at start-up,"
        " unless the council revoked it since).",
    )
    assessor_addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated EIP-55 addresses holding the assessor role (granted at start-up,"
        " unless the council revoked it since).",
    )
    pool_indexer_interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="Seconds between polls of the pool registry and fund events."
    )
    pool_indexer_confirmations: int = Field(
        default=0, ge=0, le=1000, description="Blocks an event must be buried under before it is indexed."
    )
    pool_indexer_max_blocks: int = Field(
        default=2000, ge=1, le=100_000, description="Largest block range asked for in one eth_getLogs call."
    )
    pool_expiry_sweep_interval_s: float = Field(
        default=86_400, gt=0, description="Seconds between sweeps that retire expired patents."
    )
    pool_admission_min_assessments: int = Field(default=3, ge=1, le=100)
    pool_admission_min_mean_score: int = Field(default=60, ge=0, le=100)
    pool_admission_require_core_majority: bool = True
    pool_mint_policy_version: str = Field(
        default="2026.1",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Version of the published BPC mint policy; stored with each admitted patent.",
    )
    pool_mint_base_amount_wei: int = Field(
        default=1000 * 10**18, gt=0, lt=2**256, description="BPC base units minted for a score of 100."
    )
    pool_mint_resend_after_s: int = Field(
        default=600,
        ge=0,
        description="On a remote chain, how long a mint sent but not seen on chain waits to be resent.",
    )
    pool_payout_batch_size: int = Field(
        default=50, ge=1, le=500, description="Recipients per Fund.payout transaction."
    )
    # --- licensing (exchange.licenses) -----------------------------------------------------------
    licence_indexer_interval_s: float = Field(
        default=2.0, ge=0, le=3600, description="Seconds between polls of DeviceLicenses events (0: no loop)."
    )
    licence_pending_upload_ttl_s: int = Field(
        default=7 * 86_400,
        ge=60,
        description=(
            "Seconds a pending device upload holds its device ids against other uploads; after it, an"
            " upload needing them releases it (a registration made later is adopted on re-upload)."
        ),
    )
    licence_pending_devices_max: int = Field(
        default=2_000_000, ge=1, description="Devices a manufacturer may hold in pending uploads at once."
    )
    licence_indexer_confirmations: int = Field(
        default=0, ge=0, le=1000, description="Blocks a DeviceLicenses event waits under before it counts."
    )
    licence_indexer_max_blocks: int = Field(
        default=2000, ge=1, le=100_000, description="Largest block range of one indexer eth_getLogs call."
    )
    licence_tree_cache_mib: int = Field(
        default=256, ge=0, le=65_536, description="Memory for cached batch Merkle trees, per process."
    )
    licence_resolver_base: str | None = Field(
        default=None,
        max_length=RESOLVER_BASE_MAX_LENGTH,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Base URL of device Digital Links (default http://host:port).",
    )
    licence_read_database_url: str | None = Field(
        default=None, description="Database the device resolver reads (a read replica); default DATABASE_URL."
    )
    licence_read_pool_size: int = Field(
        default=20, ge=1, le=200, description="Connections of the resolver's pool on PostgreSQL."
    )

    # --- trading (exchange.trading) -------------------------------------------------------------
    trading_tick_size_quote: int = Field(
        default=10**4,
        gt=0,
        lt=2**256,
        description="Price step in Vault price units (quote base units per 10**18 base units).",
    )
    trading_lot_size_base: int = Field(
        default=10**15, gt=0, lt=2**256, description="Order amounts are multiples of this many base units."
    )
    trading_min_amount_base: int = Field(
        default=10**16, gt=0, lt=2**256, description="Smallest order amount in base units (a lot multiple)."
    )
    trading_maker_fee_bps: int = Field(default=10, ge=0, le=10_000, description="Fee of the resting side.")
    trading_taker_fee_bps: int = Field(default=20, ge=0, le=10_000, description="Fee of the incoming side.")
    trading_expiry_margin_s: int = Field(
        default=30,
        ge=0,
        le=86_400,
        description="Orders leave the book this long before their signed expiry, so settlement can land.",
    )
    trading_membership_ttl_s: float = Field(
        default=5.0, ge=0, le=3600, description="How long an isActiveMember answer is reused."
    )
    trading_wallet_recheck_s: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description=(
            "Seconds between checks of the resting orders of contract wallets (ERC-1271): each such"
            " order's wallet is asked again whether it accepts the order's signature, and an order it"
            " refused at two checks in a row is cancelled (reason wallet_refused) before it can trade."
            " 0: no check, so such an order is cancelled only once one of its fills fails settlement."
        ),
    )
    trading_membership_poll_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description=(
            "Seconds between polls of PoolRegistry status events; a poll cancels the resting orders"
            " of members suspended or expelled on chain. 0: no poll, so a suspended member's resting"
            " orders are not cancelled automatically (only at the next start)."
        ),
    )
    trading_max_batch: int = Field(
        default=2000,
        ge=1,
        # On SQLite a cycle's balance read binds two values per (account, token) key, its keys
        # padded to a power of two: 2,048 orders of as many accounts, the 256 makers the read
        # looks ahead to and the fee account make 4,610 keys, padded to 8,192: 16,384 parameters,
        # under the 32,766 of one statement SQLite allows by default (the lookup of journaled
        # orders binds five per order, padded: 10,240).
        le=2048,
        description="Most commands in one journal transaction.",
    )
    trading_checkpoint_every: int = Field(
        default=10_000, ge=1, description="Journal commands between two snapshots of a book."
    )
    trading_journal_head_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description=(
            "GET /v1/markets/{id}/journal answers a head probed at most this long ago: the book's"
            " state hash (an encoding of the whole book) is computed at most once per interval."
        ),
    )
    trading_verify_replay_on_start: bool = Field(
        default=True,
        description="At start, also replay the whole journal and compare the state hashes.",
    )
    trading_idempotency_retention_s: float = Field(
        default=86_400,
        ge=60,
        le=90 * 86_400,
        description="How long an Idempotency-Key and its answer are kept; after that the key is free.",
    )
    trading_session_cache_s: float = Field(
        default=2.0, ge=0, le=60, description="How long a resolved bearer token is reused by trading routes."
    )
    ws_per_message_deflate: bool = Field(
        default=False,
        description="Offer permessage-deflate on WebSockets: less bandwidth, but every message is "
        "compressed once per subscriber (the book stream fans out, so it is off by default).",
    )
    ws_max_message_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 2**20,
        description="Largest WebSocket message a client may send (its operations are small JSON objects).",
    )
    trading_ws_outbox_limit: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Messages a WebSocket connection may have waiting before it is closed as too slow.",
    )
    trading_ws_outbox_max_bytes: int = Field(
        default=16 * 2**20,
        ge=1024,
        le=2**31,
        description="Characters a WebSocket connection may have waiting behind its next message before "
        "it is closed as too slow (that message alone may be longer: a deep book's snapshot).",
    )
    trading_ws_session_recheck_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often a signed-in WebSocket checks that its session still holds.",
    )
    trading_ws_connections_per_ip: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="WebSocket connections one client IP may hold open at once; a handshake beyond "
        "them is refused (429) until one closes. Every book subscriber is sent every diff.",
    )
    trading_rate_account_per_s: float = Field(default=50.0, gt=0, description="Private requests per account.")
    trading_rate_account_burst: int = Field(default=100, ge=1)
    trading_rate_ip_per_s: float = Field(default=200.0, gt=0, description="Trading requests per client IP.")
    trading_rate_ip_burst: int = Field(default=400, ge=1)
    trading_withdrawal_ttl_s: int = Field(
        default=3600, ge=60, le=30 * 86_400, description="Validity of a co-signed withdrawal authorisation."
    )

    # --- settlement and the Vault indexer (exchange.trading.settlement, exchange.trading.indexer) ----
    vault_indexer_interval_s: float = Field(
        default=1.0, ge=0, le=3600, description="Seconds between polls of Vault events (0: no loop)."
    )
    vault_indexer_confirmations: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Blocks a Vault event must be buried under before the ledger counts it.",
    )
    vault_indexer_max_blocks: int = Field(
        default=2000, ge=1, le=100_000, description="Largest block range of one Vault eth_getLogs call."
    )
    settlement_interval_s: float = Field(
        default=1.0, ge=0, le=3600, description="Seconds between settlement steps when idle (0: no loop)."
    )
    settlement_batch_size: int = Field(
        default=50, ge=1, le=500, description="Most fills in one Vault.settle transaction."
    )
    settlement_confirmations: int = Field(
        default=0, ge=0, le=1000, description="Blocks a settle transaction must be buried under to count."
    )
    settlement_fee_bump_percent: int = Field(
        default=20, ge=10, le=1000, description="Fee raise of a replacement for a stuck settle transaction."
    )
    settlement_stuck_after_s: float = Field(
        default=30.0, gt=0, le=86_400, description="Age at which an unmined settle transaction is replaced."
    )
    settlement_max_fee_per_gas_wei: int = Field(
        default=500 * 10**9, gt=0, lt=2**256, description="Fee bumps stop at this max fee per gas."
    )
    settlement_max_reverts: int = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "After this many reverted batches (reverts about a fill, or unexplained), a fill is"
            " settled in batches of its own, and given up when one of those reverts again. A batch"
            " of several fills fails none of them for reverting."
        ),
    )

    @property
    def sign_in_domain(self) -> str:
        return self.siwe_domain or f"{self.host}:{self.port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # EXCHANGE_DATABASE_URL and EXCHANGE_CHAIN_RPC_URL count as unknown: the default env source
        # would read them, and the unknown-variable source then makes their use an error, pointing at
        # the variable's real name instead of letting two names compete.
        known = VARIABLES_READ_ELSEWHERE | {
            f"{ENV_PREFIX}{name}".upper() for name in cls.model_fields if name not in FIXED_NAME_VARIABLES
        }
        return (
            init_settings,
            env_settings,
            _FixedNameVariables(settings_cls),
            # Lowest priority: only keys that no other source knows end up here.
            _UnknownExchangeVariables(settings_cls, known),
        )

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("chain_rpc_url", mode="before")
    @classmethod
    def _empty_rpc_url_means_embedded(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("chain_rpc_url")
    @classmethod
    def _check_rpc_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"(https?|wss?)://[^\s/]+", value):
            raise ValueError("CHAIN_RPC_URL must be an http(s):// or ws(s):// URL")
        return value

    @field_validator("deployment_manifest", mode="before")
    @classmethod
    def _empty_manifest_means_default(cls, value: object) -> object:
        """``EXCHANGE_DEPLOYMENT_MANIFEST=`` is unset, as the commands read it: not the path ``.``."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("operator_private_key", mode="before")
    @classmethod
    def _empty_key_means_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("operator_private_key")
    @classmethod
    def _check_private_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value().strip()
        # Never echo the key itself in the error.
        if not _PRIVATE_KEY_PATTERN.fullmatch(key):
            raise ValueError("operator private key must be 32 bytes as 64 hex digits, optionally 0x-prefixed")
        if not 0 < int(key.removeprefix("0x"), 16) < SECP256K1_N:
            raise ValueError("operator private key is outside the secp256k1 key range")
        return SecretStr(key if key.startswith("0x") else f"0x{key}")

    @field_validator("council_addresses", "registrar_addresses", "assessor_addresses", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("council_addresses", "registrar_addresses", "assessor_addresses")
    @classmethod
    def _check_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Mixed case is a checksum: a typo in it must not grant a role to someone else.
        return tuple(dict.fromkeys(checked_address(address) for address in value))

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _no_empty_token(cls, value: object) -> object:
        """An empty token (``EXCHANGE_METRICS_TOKEN=``) is no token: it would match an empty header."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _remote_chain_needs_a_signer(self) -> Settings:
        if self.chain_rpc_url is not None and self.operator_private_key is None and not self.dev_accounts:
            raise ValueError(
                "CHAIN_RPC_URL is set but no operator key is configured: set EXCHANGE_OPERATOR_PRIVATE_KEY, "
                "or EXCHANGE_DEV_ACCOUNTS=true if the node has unlocked development accounts"
            )
        return self

    @model_validator(mode="after")
    def _trading_rules_are_exact(self) -> Settings:
        if self.trading_min_amount_base % self.trading_lot_size_base:
            raise ValueError("EXCHANGE_TRADING_MIN_AMOUNT_BASE must be a multiple of the lot size")
        if (self.trading_tick_size_quote * self.trading_lot_size_base) % 10**18:
            raise ValueError(
                "one lot at one tick must be a whole number of quote units: "
                "tick_size_quote * lot_size_base must be a multiple of 10**18"
            )
        return self

    @property
    def uses_embedded_chain(self) -> bool:
        return self.chain_rpc_url is None

    @property
    def database_backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.database_url.startswith("sqlite") else "postgresql"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from its environment, read on first use."""
    return Settings()

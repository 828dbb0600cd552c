"""Settings: defaults, environment names, URL normalisation and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exchange.chain.compiler import project_root
from exchange.settings import Settings, get_settings, normalize_database_url

VALID_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def test_defaults_are_the_embedded_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'exchange.sqlite3'}"
    assert settings.chain_rpc_url is None
    assert settings.uses_embedded_chain
    assert settings.operator_private_key is None
    assert settings.migrate_on_start
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.log_format, settings.log_level) == ("auto", "INFO")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://user:pw@db:5432/exchange", "postgresql+asyncpg://user:pw@db:5432/exchange"),
        ("postgresql://user@db/exchange", "postgresql+asyncpg://user@db/exchange"),
        ("postgresql+asyncpg://user@db/exchange", "postgresql+asyncpg://user@db/exchange"),
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        # Percent-encoded passwords survive the round trip.
        ("postgres://user:p%40ss@db/exchange", "postgresql+asyncpg://user:p%40ss@db/exchange"),
    ],
)
def test_database_url_is_read_from_DATABASE_URL_and_normalised(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert Settings().database_url == expected
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "sqlite+pysqlite:///x.db", "not a url"]
)
def test_unusable_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="database_url"):
        Settings(database_url=url)


def test_prefixed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_PORT", "9100")
    monkeypatch.setenv("EXCHANGE_LOG_LEVEL", "debug")
    monkeypatch.setenv("EXCHANGE_LOG_FORMAT", "json")
    monkeypatch.setenv("EXCHANGE_MIGRATE_ON_START", "false")
    monkeypatch.setenv("EXCHANGE_DEPLOYMENT_MANIFEST", "deployments/manifest.json")
    settings = Settings()
    assert settings.port == 9100
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert not settings.migrate_on_start
    assert settings.deployment_manifest == Path("deployments/manifest.json")


def test_the_chain_read_rate_limit_is_read_from_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.chain_read_rate_ip_per_s, defaults.chain_read_rate_ip_burst) == (20.0, 100)
    monkeypatch.setenv("EXCHANGE_CHAIN_READ_RATE_IP_PER_S", "2.5")
    monkeypatch.setenv("EXCHANGE_CHAIN_READ_RATE_IP_BURST", "7")
    settings = Settings()
    assert (settings.chain_read_rate_ip_per_s, settings.chain_read_rate_ip_burst) == (2.5, 7)
    # A rate limiter needs a positive rate and a burst of at least one.
    with pytest.raises(ValidationError, match=r"(?s)chain_read_rate_ip_per_s.*greater_than"):
        Settings(chain_read_rate_ip_per_s=0)
    with pytest.raises(ValidationError, match=r"(?s)chain_read_rate_ip_burst.*greater_than_equal"):
        Settings(chain_read_rate_ip_burst=0)


@pytest.mark.parametrize("variable", ["EXCHANGE_PROT", "EXCHANGE_DATABASE_URL", "EXCHANGE_CHAIN_RPC_URL"])
def test_unknown_exchange_variables_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    # A misspelt variable must not silently leave the default in place; the two
    # connection strings are only read under their unprefixed names.
    monkeypatch.setenv(variable, "http://127.0.0.1:8545")
    with pytest.raises(ValidationError, match=variable):
        Settings()


def test_the_compilers_project_root_variable_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``EXCHANGE_PROJECT_ROOT`` is no setting, but the compiler reads it (and asks for it when it
    cannot find ``contracts/``): setting it must not stop every command that reads the settings."""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "compiler.json").write_text("{}", encoding="utf-8")
    monkeypatch.setenv("EXCHANGE_PROJECT_ROOT", str(tmp_path))
    Settings()
    assert project_root() == tmp_path


def test_unknown_keyword_arguments_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Settings(prot=1)  # type: ignore[call-arg]


def test_a_remote_chain_without_a_signer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:8545")
    with pytest.raises(ValidationError, match="EXCHANGE_OPERATOR_PRIVATE_KEY") as raised:
        Settings()
    assert "EXCHANGE_DEV_ACCOUNTS" in str(raised.value)


def test_a_remote_chain_with_unlocked_dev_accounts_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:8545")
    monkeypatch.setenv("EXCHANGE_DEV_ACCOUNTS", "true")
    settings = Settings()
    assert settings.chain_rpc_url == "http://127.0.0.1:8545"
    assert not settings.uses_embedded_chain


@pytest.mark.parametrize("key", [VALID_KEY, f"0x{VALID_KEY}", f"  0x{VALID_KEY.upper()}  "])
def test_a_remote_chain_with_an_operator_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("CHAIN_RPC_URL", "https://rpc.example:8545")
    monkeypatch.setenv("EXCHANGE_OPERATOR_PRIVATE_KEY", key)
    settings = Settings()
    assert settings.operator_private_key is not None
    assert settings.operator_private_key.get_secret_value().lower() == f"0x{VALID_KEY}"
    assert VALID_KEY not in repr(settings)
    assert VALID_KEY not in str(settings.model_dump())


@pytest.mark.parametrize(
    "key",
    [
        "0x1234",
        "zz" * 32,
        "00" * 32,  # zero is not a key
        "ff" * 32,  # above the curve order
    ],
)
def test_malformed_operator_keys_are_refused_without_echoing_them(key: str) -> None:
    with pytest.raises(ValidationError, match="operator private key") as raised:
        Settings(operator_private_key=key)  # type: ignore[arg-type]  # pydantic turns str into SecretStr
    assert key[:16] not in str(raised.value)


def test_an_empty_rpc_url_means_the_embedded_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAIN_RPC_URL", "")
    assert Settings().uses_embedded_chain


@pytest.mark.parametrize("url", ["127.0.0.1:8545", "ftp://node", "http://"])
def test_rpc_urls_must_be_http_or_websocket(url: str) -> None:
    with pytest.raises(ValidationError, match="CHAIN_RPC_URL"):
        Settings(chain_rpc_url=url, dev_accounts=True)


@pytest.mark.parametrize(
    ("field", "value"), [("port", 0), ("port", 65536), ("log_format", "xml"), ("log_level", "LOUD")]
)
def test_out_of_range_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: value})


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_PORT", "9001")
    first = get_settings()
    monkeypatch.setenv("EXCHANGE_PORT", "9002")
    assert get_settings() is first
    assert first.port == 9001
    get_settings.cache_clear()
    assert get_settings().port == 9002


def test_a_resolver_base_too_long_for_parseable_links_is_refused() -> None:
    longest = "https://id.example.org/" + "a" * (128 - len("https://id.example.org/"))
    assert Settings(licence_resolver_base=longest).licence_resolver_base == longest
    with pytest.raises(ValidationError, match="licence_resolver_base"):
        Settings(licence_resolver_base=longest + "a")


@pytest.mark.parametrize(
    "domain",
    ["https://exchange.example.com", "exchange.example.com/", "exchange.example.com/v1", "ex change.io"],
)
def test_a_sign_in_domain_that_is_no_host_and_port_is_refused(domain: str) -> None:
    """Such a domain would be handed out by POST /v1/auth/nonce, and no sign-in message could name it."""
    with pytest.raises(ValidationError, match="siwe_domain"):
        Settings(siwe_domain=domain)


@pytest.mark.parametrize(
    "domain", ["exchange.example.com", "exchange.example.com:8443", "[::1]:8000", "127.0.0.1"]
)
def test_a_sign_in_domain_of_host_and_port_is_taken(domain: str) -> None:
    assert Settings(siwe_domain=domain).sign_in_domain == domain

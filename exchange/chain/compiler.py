"""Compile the Solidity sources with the same compiler input Hardhat uses.

Hardhat and this module both read ``contracts/compiler.json`` (compiler version
and settings) and name sources the same way (``contracts/X.sol``,
``@openzeppelin/contracts/...``), so both produce identical bytecode. The
compiler is solc-js from ``node_modules`` behind the ``bin/solcjs`` shim,
driven through py-solc-x's ``compile_standard``. Results are cached by the
SHA-256 of the full compiler input, so an unchanged tree never recompiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx
import structlog

log = structlog.get_logger(__name__)

OUTPUT_SELECTION: dict[str, Any] = {
    "*": {
        "*": ["abi", "evm.bytecode", "evm.deployedBytecode", "evm.methodIdentifiers", "metadata"],
        "": ["ast"],
    }
}
_IMPORT = re.compile(r"""^\s*import\s+(?:[^;]*?\s+from\s+)?["']([^"']+)["']\s*;""", re.MULTILINE)


class CompilerError(RuntimeError):
    """The sources did not compile, or the compiler could not run."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract."""

    name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    immutable_references: dict[str, list[dict[str, int]]]

    @property
    def abi_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.abi, sort_keys=True).encode()).hexdigest()


def project_root() -> Path:
    """The directory holding ``contracts/`` (``EXCHANGE_PROJECT_ROOT`` overrides: a variable the
    settings know as one read here, in ``exchange.settings.VARIABLES_READ_ELSEWHERE``)."""
    override = os.environ.get("EXCHANGE_PROJECT_ROOT")
    candidates = [Path(override)] if override else []
    candidates += [Path(__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if (candidate / "contracts" / "compiler.json").is_file():
            return candidate
    raise CompilerError("cannot find contracts/compiler.json; set EXCHANGE_PROJECT_ROOT")


def _source_path(root: Path, source_name: str) -> Path:
    if source_name.startswith("contracts/"):
        return root / source_name
    return root / "node_modules" / source_name


def collect_sources(root: Path) -> dict[str, str]:
    """Every project source and everything it imports, keyed by Hardhat's source names."""
    pending = sorted(p.relative_to(root).as_posix() for p in (root / "contracts").rglob("*.sol"))
    sources: dict[str, str] = {}
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        path = _source_path(root, name)
        try:
            content = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise CompilerError(f"source {name!r} not found at {path} (run npm ci?)") from exc
        sources[name] = content
        for target in _IMPORT.findall(content):
            if target.startswith("."):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target not in sources:
                pending.append(target)
    return dict(sorted(sources.items()))


def compiler_input(root: Path) -> dict[str, Any]:
    """The standard-JSON input, equal to what Hardhat sends for the same tree."""
    config = json.loads((root / "contracts" / "compiler.json").read_text(encoding="utf-8"))
    settings = dict(config["settings"])
    settings["outputSelection"] = OUTPUT_SELECTION
    return {
        "language": "Solidity",
        "sources": {name: {"content": content} for name, content in collect_sources(root).items()},
        "settings": settings,
    }


def compiler_version(root: Path) -> str:
    config = json.loads((root / "contracts" / "compiler.json").read_text(encoding="utf-8"))
    return str(config["version"])


def _run_compiler(root: Path, input_json: dict[str, Any]) -> dict[str, Any]:
    shim = root / "bin" / "solcjs"
    if not (root / "node_modules" / "solc" / "solc.js").is_file():
        raise CompilerError("node_modules/solc is missing: run `npm ci` first")
    try:
        output: dict[str, Any] = solcx.compile_standard(input_json, solc_binary=shim, allow_empty=True)
    except solcx.exceptions.SolcError as exc:
        raise CompilerError(str(exc)) from exc
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompilerError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    return output


def compile_contracts(root: Path | None = None, cache_dir: Path | None = None) -> dict[str, Artifact]:
    """Compile (or load from cache) every contract, keyed by contract name."""
    root = root or project_root()
    cache_dir = cache_dir or root / ".build" / "solc"
    input_json = compiler_input(root)
    digest = hashlib.sha256(
        (compiler_version(root) + json.dumps(input_json, sort_keys=True)).encode()
    ).hexdigest()
    cached = cache_dir / f"{digest}.json"
    loaded = _LOADED.get(cached)
    if loaded is not None:  # this process read that output already: a service starts many times in tests
        return dict(loaded)
    if cached.is_file():
        output = json.loads(cached.read_text(encoding="utf-8"))
        log.debug("chain.compile_cached", input_sha256=digest)
    else:
        log.info("chain.compiling", sources=len(input_json["sources"]), input_sha256=digest)
        output = _run_compiler(root, input_json)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")  # processes compiling at once write apart
        tmp.write_text(json.dumps(output), encoding="utf-8")
        tmp.replace(cached)
    artifacts = _artifacts(output)
    _LOADED[cached] = artifacts
    return dict(artifacts)


_LOADED: dict[Path, dict[str, Artifact]] = {}
"""Artifacts this process has read, by the cache file named after their input's digest."""


def _artifacts(output: dict[str, Any]) -> dict[str, Artifact]:
    artifacts: dict[str, Artifact] = {}
    for source_name, contracts in output["contracts"].items():
        for name, data in contracts.items():
            evm = data["evm"]
            artifact = Artifact(
                name=name,
                source_name=source_name,
                abi=data["abi"],
                bytecode="0x" + evm["bytecode"]["object"],
                deployed_bytecode="0x" + evm["deployedBytecode"]["object"],
                immutable_references=evm["deployedBytecode"].get("immutableReferences", {}),
            )
            # Project contracts win over library contracts of the same name.
            if name not in artifacts or source_name.startswith("contracts/"):
                artifacts[name] = artifact
    return artifacts

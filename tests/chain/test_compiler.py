"""The Python compiler path produces exactly what Hardhat produces."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from exchange.chain.compiler import Artifact, collect_sources, compile_contracts, compiler_input
from tests.chain.nodes import ROOT

POOL = ("PoolRegistry", "BPC", "BPR", "Fund", "LicenseGate", "TestToken")

# One pytest-xdist worker runs them all: `hardhat compile` rewrites its cache and artifacts in place.
pytestmark = pytest.mark.xdist_group("hardhat-compile")


@pytest.fixture(scope="module")
def hardhat_artifacts() -> dict[str, dict[str, object]]:
    npx = shutil.which("npx")
    assert npx, "npx missing: the project's setup installs Node.js"
    subprocess.run([npx, "hardhat", "compile", "--quiet"], cwd=ROOT, check=True, capture_output=True)
    found: dict[str, dict[str, object]] = {}
    for path in (ROOT / "artifacts" / "contracts").rglob("*.json"):
        if path.name.endswith(".dbg.json"):
            continue
        data = json.loads(path.read_text())
        found[data["contractName"]] = data
    return found


def test_python_and_hardhat_bytecode_are_identical(hardhat_artifacts: dict[str, dict[str, object]]) -> None:
    artifacts = compile_contracts()
    for name in POOL:
        assert artifacts[name].bytecode == hardhat_artifacts[name]["bytecode"], name
        assert artifacts[name].deployed_bytecode == hardhat_artifacts[name]["deployedBytecode"], name
        assert artifacts[name].abi == hardhat_artifacts[name]["abi"], name


def test_compiler_input_matches_hardhat_build_info(hardhat_artifacts: dict[str, dict[str, object]]) -> None:
    """The inputs Hardhat compiled the current artifacts from agree with ours, source by source."""
    ours = compiler_input(ROOT)
    build_infos = set()
    for name in POOL:
        debug = next((ROOT / "artifacts" / "contracts").rglob(f"{name}.dbg.json"))
        build_infos.add((debug.parent / json.loads(debug.read_text())["buildInfo"]).resolve())
    for path in build_infos:
        theirs = json.loads(path.read_text())["input"]
        assert theirs["settings"] == ours["settings"]
        for name, source in theirs["sources"].items():
            assert ours["sources"].get(name) == source, name


def test_sources_resolve_relative_and_package_imports() -> None:
    sources = collect_sources(ROOT)
    assert "contracts/interfaces/IPoolRegistry.sol" in sources
    assert "@openzeppelin/contracts/token/ERC20/ERC20.sol" in sources
    assert "@openzeppelin/contracts/utils/Context.sol" in sources  # reached only through imports


def test_results_are_cached_by_input_hash(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = compile_contracts(ROOT, cache)
    cached_files = list(cache.glob("*.json"))
    assert len(cached_files) == 1
    stamp = cached_files[0].stat().st_mtime_ns
    second = compile_contracts(ROOT, cache)
    assert cached_files[0].stat().st_mtime_ns == stamp
    assert first["BPC"] == second["BPC"]
    assert isinstance(first["BPC"], Artifact)

"""Build a native (mypyc-compiled) copy of the order book, outside the source tree.

    .venv/bin/python -m exchange.orderbook.build_native [--out .build/orderbook-native]

The output directory holds a self-contained ``exchange.orderbook`` package
whose hot modules are C extensions compiled by mypyc from the very same
sources; put that directory first on ``PYTHONPATH`` to use it
(``bench/orderbook.py`` does). The source tree is never written to, so a stale
build can never shadow edited sources: rebuild after changing the book.

``commands``, ``snapshot`` and the package ``__init__`` stay interpreted, so a
command carrying a wrongly typed value is still rejected with a reason, as in
the pure-Python package, instead of failing with a ``TypeError``.
``tests/orderbook/test_native_build.py`` checks that a build emits exactly the
events of the pure-Python book. Needs mypy (mypyc), setuptools and a C
compiler, all development tools; nothing at run time depends on this module.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import shutil
from pathlib import Path

COMPILED_MODULES = ("market", "events", "views", "validation", "levels", "matching", "placing", "book")
DEFAULT_OUT = Path(".build") / "orderbook-native"


def is_current(out: Path = DEFAULT_OUT) -> bool:
    """Whether ``out`` holds a build made from the sources as they are now."""
    sources = Path(__file__).resolve().parent
    names = [path.name for path in sources.glob("*.py")]
    _, mismatched, missing = filecmp.cmpfiles(sources, out / "exchange" / "orderbook", names, shallow=False)
    return not mismatched and not missing


def build(out: Path) -> Path:
    """(Re)build the native package in ``out`` and return its absolute path."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    out = out.resolve()
    source = Path(__file__).resolve().parent
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(
        source,
        out / "exchange" / "orderbook",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    (out / "exchange" / "__init__.py").write_text('"""Native build of exchange.orderbook only."""\n')
    with contextlib.chdir(out):
        extensions = mypycify(
            [f"exchange/orderbook/{module}.py" for module in COMPILED_MODULES],
            opt_level="3",
        )
        setup(
            name="exchange-orderbook-native",
            ext_modules=extensions,
            script_args=["--quiet", "build_ext", "--inplace", "--build-temp", "build"],
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the order book with mypyc.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args()
    out = build(args.out)
    print(f"native order book built in {os.path.relpath(out)}")


if __name__ == "__main__":
    main()

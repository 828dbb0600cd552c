"""A native (mypyc) build of the book emits exactly the events of the pure-Python book.

Runs only when a build of the current sources exists (``python -m
exchange.orderbook.build_native`` writes one to ``.build/orderbook-native``;
``bench/orderbook.py`` rebuilds it when stale); building takes too long for
every test run. The build is exercised in a subprocess with its directory first on
the path, over the same seeded command logs as the determinism tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.orderbook.build_native import DEFAULT_OUT, is_current
from tests.orderbook.digest import SEQUENCES, digest_of_runs

REPOSITORY = Path(__file__).resolve().parents[2]
NATIVE = REPOSITORY / DEFAULT_OUT


pytestmark = pytest.mark.skipif(
    not is_current(NATIVE),
    reason="no current native build (python -m exchange.orderbook.build_native)",
)


def test_native_build_matches_the_python_book() -> None:
    script = (
        "import exchange.orderbook.book as book\n"
        "assert not book.__file__.endswith('.py'), book.__file__\n"
        "from tests.orderbook.digest import digest_of_runs\n"
        "print(digest_of_runs())\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(NATIVE), str(REPOSITORY)]))
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=NATIVE,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == digest_of_runs(), f"native build differs over {SEQUENCES} logs"

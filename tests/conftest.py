from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from lab import Lab, have_root_netns  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(*tools: str) -> None:
    """Skip locally when a tool or root is missing; under CI=true, fail instead."""
    ok, why = have_root_netns()
    missing = [t for t in tools if shutil.which(t) is None]
    if ok and not missing:
        return
    reason = why or f"needs {', '.join(missing)}"
    if IN_CI:
        pytest.fail(f"CI=true but the lab cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require("ip")
    lb = Lab(tmp_path)
    try:
        yield lb
    finally:
        lb.close()

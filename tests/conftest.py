from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wgpy.testing.lab import IN_CI, Lab, require

__all__ = ["IN_CI", "Lab", "require"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require("ip")
    lb = Lab(tmp_path)
    try:
        yield lb
    finally:
        lb.close()

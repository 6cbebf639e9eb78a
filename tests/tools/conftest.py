"""The ``dev`` fixture: one wireguard-go device in its own namespace."""

from __future__ import annotations

import pytest
from wgtest import Dev, require, start_wireguard_go

from wgpy.testing.lab import Lab


@pytest.fixture
def dev(lab: Lab) -> Dev:
    require("wg", "wireguard-go")
    ns = lab.netns("d")
    return Dev(lab, ns, start_wireguard_go(lab, ns))

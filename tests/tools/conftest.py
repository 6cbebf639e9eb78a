"""The ``dev`` fixture: one wireguard-go device in its own namespace."""

from __future__ import annotations

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.wgtools import Dev, start_wireguard_go


@pytest.fixture
def dev(lab: Lab) -> Dev:
    require("wg", "wireguard-go")
    ns = lab.netns("d")
    return Dev(lab, ns, start_wireguard_go(lab, ns))

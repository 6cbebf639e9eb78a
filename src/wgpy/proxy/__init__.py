"""An any-port transparent TCP/UDP proxy in front of the tunnel (``wgpy proxy``).

Layers: pure modules (``config``, ``match``, ``limits``, ``health``'s
``HealthBook``, ``proxyproto``, ``rules``) and a thin asyncio/socket shell
(``tproxy``, ``splice``, ``udp``, ``server``, ``control``, ``netsetup``,
``cli``).  See the README section "wgpy proxy".
"""

"""Test support for wgpy: what its tests and benchmarks share.

- ``lab``: network namespaces, processes and their cleanup (``Lab``);
- ``nodes``: WireGuard devices (wgpyd or wireguard-go) in lab namespaces;
- ``memnet``: sans-IO devices wired together in memory, with a fake clock;
- ``attacks``: handshake messages an attacker can build, state snapshots;
- ``flood``: the handshake flooder, run in an attacker's namespace;
- ``natlab``, ``proxylab``: the NAT-traversal and proxy topologies;
- ``origin_server``, ``many_clients``: programs the proxy lab runs;
- ``fuzztargets``: the fuzz targets of ``tests/fuzz``.

Nothing in the rest of ``wgpy`` imports this package (an import-linter
contract checks it).
"""

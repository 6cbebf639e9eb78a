"""NAT traversal: a DNS-SD endpoint registry and a discovery client.

``records`` and ``registry`` are the sans-IO core (names, record sets, the
authoritative answer and DNS UPDATE logic); ``nat`` and ``paths`` are the
sans-IO client logic (NAT classification and candidate selection).  The
asyncio server, the blocking client and the command line live in
``server``, ``client`` and ``cli``.
"""

"""TSIG keys from BIND's key-file syntax (sans-IO: text in, keys out).

``tsig-keygen NAME`` (Debian's bind9 package) writes::

    key "NAME" {
            algorithm hmac-sha256;
            secret "BASE64";
    };

``named.conf`` includes the same file, so the registry, discover and a BIND
secondary share one key file.  dnspython signs and verifies (RFC 8945).
"""

from __future__ import annotations

import base64
import binascii
import re

import dns.exception
import dns.name
import dns.tsig

from wgpy.protocol.errors import ConfigError

ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}
_TOKEN = re.compile(r'#[^\n]*|//[^\n]*|"[^"\n]*"|[{};]|[^\s{};"]+|\s+')

Keyring = dict[dns.name.Name, dns.tsig.Key]


def parse_keyfile(text: str, filename: str | None = None) -> Keyring:
    """Every ``key`` statement of ``text``, by name (in file order).

    :raises ConfigError: naming the file and line of the first problem.
    """
    tokens: list[tuple[str, int]] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(f"unexpected {text[pos]!r}", filename, line)
        tok = m.group(0)
        if not tok.isspace() and not tok.startswith(("#", "//")):
            tokens.append((tok, line))
        line += tok.count("\n")
        pos = m.end()
    keys: Keyring = {}
    i = 0

    def expect(what: str) -> tuple[str, int]:
        nonlocal i
        if i >= len(tokens):
            raise ConfigError(f"unexpected end of file, expected {what}", filename, line)
        tok = tokens[i]
        i += 1
        return tok

    while i < len(tokens):
        word, at = expect("key")
        if word != "key":
            raise ConfigError(f"expected 'key', found {word!r}", filename, at)
        raw_name, at = expect("a key name")
        name = _name(raw_name.strip('"'), filename, at)
        if expect("'{'")[0] != "{":
            raise ConfigError("expected '{' after the key name", filename, at)
        algorithm: dns.name.Name | None = None
        secret: bytes | None = None
        while True:
            word, at = expect("'algorithm', 'secret' or '}'")
            if word == "}":
                break
            value, vat = expect(f"a value for {word}")
            if expect("';'")[0] != ";":
                raise ConfigError(f"expected ';' after {word}", filename, vat)
            if word == "algorithm":
                if value.lower() not in ALGORITHMS:
                    raise ConfigError(f"unsupported algorithm {value!r} (use one of "
                                      f"{', '.join(ALGORITHMS)})", filename, vat)
                algorithm = ALGORITHMS[value.lower()]
            elif word == "secret":
                try:
                    secret = base64.b64decode(value.strip('"'), validate=True)
                except (binascii.Error, ValueError):
                    raise ConfigError("the secret is not base64", filename, vat) from None
                if len(secret) < 16:
                    raise ConfigError("the secret is shorter than 16 bytes", filename, vat)
            else:
                raise ConfigError(f"unknown key option {word!r}", filename, at)
        if expect("';'")[0] != ";":
            raise ConfigError("expected ';' after '}'", filename, at)
        if algorithm is None or secret is None:
            raise ConfigError(f"key {name} needs an algorithm and a secret", filename, at)
        if name in keys:
            raise ConfigError(f"key {name} is defined twice", filename, at)
        keys[name] = dns.tsig.Key(name, secret, algorithm)
    if not keys:
        raise ConfigError("no key statement", filename)
    return keys


def _name(text: str, filename: str | None, lineno: int) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as e:
        raise ConfigError(f"bad key name {text!r}: {e}", filename, lineno) from None

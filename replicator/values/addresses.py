"""Exact parsing of network addresses stored as text: ``inet``, ``cidr``, ``macaddr`` and ``macaddr8``.

Each function returns the value psycopg writes and reads back for the type, or raises
:class:`ValueRefused` with a short reason: what is accepted is what PostgreSQL itself accepts, and
nothing is guessed (zone ids and host bits in a ``cidr`` are refused, as PostgreSQL refuses them).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from replicator.values.refusal import ValueRefused

IpValue = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Interface | ipaddress.IPv6Interface


def parse_inet(text: str) -> IpValue:
    """An ``inet``: an address, or address/prefix, as psycopg reads it back from PostgreSQL.

    An address with its full prefix (``/32``, ``/128``) is the bare address, as PostgreSQL prints it.
    Zone ids (``fe80::1%eth0``) and spaces are refused: PostgreSQL has no such inet.
    """
    try:
        if "/" not in text:
            if "%" in text:
                raise ValueError("zone ids are not part of an inet")
            return ipaddress.ip_address(text)
        interface = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise ValueRefused(f"text is not an IP address ({exc})") from None
    if "%" in text:
        raise ValueRefused("text is not an IP address (zone ids are not part of an inet)")
    if interface.network.prefixlen == interface.max_prefixlen:
        return interface.ip
    return interface


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A ``cidr`` network; host bits set are refused (PostgreSQL refuses them too)."""
    try:
        if "%" in text:
            raise ValueError("zone ids are not part of a cidr")
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueRefused(f"text is not a network in CIDR notation ({exc})") from None


_HEX2: Final = "[0-9a-fA-F]{2}"
#: The macaddr spellings PostgreSQL accepts (its documentation's list), 6 bytes; macaddr8 alike with 8.
_MAC_FORMS: Final = {
    size: re.compile(
        "|".join(
            [
                ":".join([_HEX2] * size),
                "-".join([_HEX2] * size),
                _HEX2 * (size // 2) + "[:-]" + _HEX2 * (size // 2),
                r"\.".join([_HEX2 * 2] * (size // 2)),
                "-".join([_HEX2 * 2] * (size // 2)),
                _HEX2 * size,
            ]
        )
    )
    for size in (6, 8)
}


def parse_macaddr(text: str, size: int) -> bytes:
    """A ``macaddr`` (size 6) or ``macaddr8`` (size 8) as its bytes, from the spellings PostgreSQL
    accepts (``08:00:2b:01:02:03``, ``08-00-2b-01-02-03``, ``08002b:010203``, ``0800.2b01.0203``,
    ``0800-2b01-0203``, ``08002b010203``). A 6-byte address in a macaddr8 becomes its EUI-64 form
    (``ff:fe`` inserted in the middle), as PostgreSQL converts it. The bytes are macaddr's binary
    form, and what psycopg reads back (it has no macaddr type)."""
    for length in (size, 6):
        if _MAC_FORMS[length].fullmatch(text):
            digits = re.sub("[^0-9a-fA-F]", "", text)
            if length < size:
                digits = digits[:6] + "fffe" + digits[6:]
            return bytes.fromhex(digits)
    raise ValueRefused(f"text is not a {size}-byte MAC address")

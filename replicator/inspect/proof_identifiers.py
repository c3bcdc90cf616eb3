"""The independent reading's rules for identifiers with one canonical spelling (:mod:`replicator.inspect.proof`
has the table): uuid, and the network addresses inet, cidr, macaddr and macaddr8.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Final

from replicator.inspect.proof_rule import ColumnType, Read, unreadable

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}")


def uuid_source(value: object) -> object:
    if type(value) is str and _UUID.fullmatch(value):
        return uuid.UUID(value)
    if type(value) is bytes and len(value) == 16:
        return uuid.UUID(bytes=value)
    return unreadable(value)


def inet(value: object) -> object:
    """An address as PostgreSQL's inet prints it: the prefix only when it is not the whole address."""
    try:
        iface = ipaddress.ip_interface(str(value))
    except ValueError:
        return unreadable(value)
    return str(iface.ip) if iface.network.prefixlen == iface.max_prefixlen else str(iface)


def cidr(value: object) -> object:
    try:
        return str(ipaddress.ip_network(str(value), strict=True))
    except ValueError:
        return unreadable(value)


def mac(t: ColumnType) -> Read:
    eight = t.name == "macaddr8"

    def read(value: object) -> object:
        if type(value) is not str:
            return unreadable(value)
        digits = re.sub(r"[:.\-]", "", value).lower()
        if eight and len(digits) == 12:  # a 6-byte address in a macaddr8 column: ff:fe in the middle
            digits = digits[:6] + "fffe" + digits[6:]
        if len(digits) != (16 if eight else 12) or not re.fullmatch(r"[0-9a-f]+", digits):
            return unreadable(value)
        return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))

    return read

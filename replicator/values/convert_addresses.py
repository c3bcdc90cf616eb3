"""Converters for the network address columns: inet, cidr, macaddr and macaddr8 (parsed by
:mod:`replicator.values.addresses`)."""

from __future__ import annotations

from replicator.values.addresses import parse_cidr, parse_inet, parse_macaddr
from replicator.values.fastpath import Plan
from replicator.values.refusal import refuse_storage
from replicator.values.targettype import TargetType


def network_plan(t: TargetType) -> Plan:
    """inet / cidr: text to the ipaddress object psycopg writes, and reads back."""
    parse = parse_cidr if t.name == "cidr" else parse_inet

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is not str:
            raise refuse_storage(v, t.name)
        return parse(v)

    return Plan(convert)


def macaddr_plan(t: TargetType) -> Plan:
    """macaddr / macaddr8: text in any spelling PostgreSQL accepts, or the raw bytes, as the binary form."""
    size = 8 if t.name == "macaddr8" else 6

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is str:
            return parse_macaddr(v, size)
        if type(v) is bytes and len(v) == size:
            return v
        raise refuse_storage(v, t.name)

    return Plan(convert)

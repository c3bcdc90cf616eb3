"""Configuration: one frozen msgspec Struct, filled from TOML, then environment, then flags.

Precedence, lowest first: the defaults below (named constants, so code and docs cite one value),
the TOML file (``--config`` or ``replicator.toml`` in the working directory), environment variables
``REPLICATOR_<SECTION>__<KEY>``, and command-line flags. An unknown key or a bad value anywhere is
an error that names the key and where it came from; a typo must never silently fall back to a
default during a migration.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from replicator.errors import ConfigError

DEFAULT_CONFIG_FILE = "replicator.toml"
ENV_PREFIX = "REPLICATOR_"

DEFAULT_BUSY_TIMEOUT_MS = 5_000
DEFAULT_STATE_SCHEMA = "replicator"
DEFAULT_TARGET_SCHEMA = "public"
DEFAULT_CONNECT_TIMEOUT_S = 10
DEFAULT_SNAPSHOT_WORKERS = 2
DEFAULT_SPLIT_ROWS = 100_000
DEFAULT_HELPER_MIN_BYTES = 8 * 2**20
DEFAULT_BATCH_ROWS = 20_000
DEFAULT_BATCH_BYTES = 32 * 1024 * 1024
DEFAULT_POLL_INTERVAL_S = 0.5
DEFAULT_RETRY_MAX_WAIT_S = 30.0
DEFAULT_PRUNE_IDLE_S = 2.0
DEFAULT_PRUNE_MAX_ROWS = 1_000_000
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_STALL_AFTER_S = 60.0

OnBadValue = Literal["stop", "quarantine"]
Mode = Literal["auto", "create", "existing"]
Identifiers = Literal["keep", "downcase"]
Orm = Literal["auto", "django", "sqlalchemy", "rails", "none"]
NoKeyPolicy = Literal["refuse", "rowid", "snapshot-only"]
LogFormat = Literal["auto", "console", "json"]


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str | None = None
    """The application's SQLite file (also ``--source`` or ``REPLICATOR_SOURCE``)."""
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    """How long to wait for the app's write lock before SQLITE_BUSY; then we retry."""


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dsn: str | None = None
    """PostgreSQL URI (also ``--target`` or ``REPLICATOR_TARGET``). Its password is never logged."""
    schema: str = DEFAULT_TARGET_SCHEMA
    """Schema that receives the application's tables."""
    state_schema: str = DEFAULT_STATE_SCHEMA
    """Schema for the replicator's own state, checkpoints and quarantine."""
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S


class Capture(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    no_key_policy: NoKeyPolicy = "refuse"
    """Tables without a usable primary key: refuse (name them), rowid, or snapshot-only."""
    tables: dict[str, NoKeyPolicy] = msgspec.field(default_factory=dict)
    """Per-table override of ``no_key_policy``."""


class Snapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mode: Mode = "auto"
    """create: generate the PostgreSQL schema; existing: load into the app's own; auto: create if empty."""
    on_bad_value: OnBadValue = "stop"
    """stop names the first value PostgreSQL cannot hold exactly; quarantine loads the rest and records it."""
    identifiers: Identifiers = "keep"
    workers: int = DEFAULT_SNAPSHOT_WORKERS
    orm: Orm = "auto"
    """Existing mode: the ORM that reads the database, so each decimal stored as a REAL loads as that ORM
    reads it (docs/types.md). auto: Django if the target has django_migrations, Rails if ar_internal_metadata,
    SQLAlchemy if alembic_version; none: the shortest round-trip decimal. A column's format overrides it."""
    split_rows: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_SPLIT_ROWS
    """With two workers, a table of at least this many rows that no split of whole tables balances is
    loaded by both processes (its rowid ranges, or its batches: replicator/load/share.py), so a dominant
    table keeps both cores busy; 0: every table is loaded by one process."""
    helper_min_bytes: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_HELPER_MIN_BYTES
    """With two workers, the helper process is started only for a source file (with its WAL) of at least
    this many bytes: below, its start (a Python process and its imports, ~0.3 s of a core) costs more
    than the half of the load it would take."""


class Apply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    batch_rows: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_BATCH_ROWS
    """Journal entries per batch at most (0 would apply nothing and call the journal drained)."""
    batch_bytes: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_BATCH_BYTES
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_POLL_INTERVAL_S
    """Safety-net poll of PRAGMA data_version; file events usually wake the daemon sooner (0 would spin)."""
    retry_max_wait_s: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_RETRY_MAX_WAIT_S
    prune_idle_s: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_PRUNE_IDLE_S
    """Delete applied journal entries once the app has written nothing for this long. Any commit of ours
    fails every app transaction that read before it and writes after it (a deferred ``BEGIN``, Django's
    default: SQLITE_BUSY_SNAPSHOT, "database is locked"), so the tool writes to the app's file when the app
    is quiet (see README, "Living beside the app")."""
    prune_max_rows: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_PRUNE_MAX_ROWS
    """...and, for an app that is never quiet that long, once this many applied entries wait (about 25 bytes
    each): the bound on the journal."""


class Status(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    stall_after_s: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_STALL_AFTER_S
    """A running daemon that records no progress for this long while changes wait is stalled: ``status``
    exits 1 and the metrics say so. The daemon writes a heartbeat every quarter of it (at most 10 s)."""


class Log(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: LogFormat = "auto"
    """auto: console on a terminal, JSON lines otherwise."""
    level: Literal["debug", "info", "warning", "error"] = "info"


class Metrics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    host: str = DEFAULT_METRICS_HOST


class Signing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str | None = None
    """Ed25519 private key file (``replicator keys generate``; mode 0600): cutover signs the certificate with it,
    and an auditor checks it with the public key alone (``replicator audit --public-key``). None: unsigned."""


class ColumnOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: str | None = None
    """PostgreSQL type to create or to convert to, e.g. ``timestamptz``, ``jsonb``, ``boolean``."""
    format: str | None = None
    """How the source stores it: ``unix_s``, ``unix_ms``, ``iso8601``, ``bool01``..."""
    strip_nul: bool = False
    """Remove NUL characters that PostgreSQL text cannot hold (an explicit, recorded alteration)."""
    replace_bad_utf8: bool = False
    skip: bool = False


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: Source = Source()
    target: Target = Target()
    capture: Capture = Capture()
    snapshot: Snapshot = Snapshot()
    apply: Apply = Apply()
    status: Status = Status()
    log: Log = Log()
    metrics: Metrics = Metrics()
    signing: Signing = Signing()
    types: dict[str, dict[str, ColumnOverride]] = msgspec.field(default_factory=dict)
    """Per table, per column overrides: ``[types."Table".column] type = "timestamptz"``."""


def column_fix(table: str, column: str, setting: str) -> str:
    """A per-column config change spelled so that it can be typed as it reads: the TOML table, then the key."""
    return f'add [types."{table}"."{column}"] with {setting} to the config file'


SECTIONS = {name for name in Config.__struct_fields__ if name != "types"}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section not in SECTIONS:
            raise ConfigError(
                f"environment variable {name}: unknown section {section!r}",
                hint=f"sections are {', '.join(sorted(SECTIONS))}",
            )
        found.setdefault(section, {})[key] = value
    return found


def _describe(error: msgspec.ValidationError, origin: str, env: Mapping[str, Any] | None = None) -> ConfigError:
    """One line naming the key and where its value came from: the environment variable when it was one."""
    text = str(error)
    key = text.rsplit(" - at `$.", 1)[-1].rstrip("`") if " - at `$." in text else ""
    what = text.split(" - at ")[0]
    where = f"key {key!r}" if key else "config"
    section, _, name = key.partition(".")
    if env and name in env.get(section, {}):
        origin = f"environment variable {ENV_PREFIX}{section.upper()}__{name.upper()}"
    return ConfigError(f"{origin}: {where}: {what}", hint="see replicator.example.toml for every key")


def load(
    path: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective configuration. ``path`` None means ``replicator.toml`` if present."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist", hint="check --config") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}", hint="check --config") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}", hint="fix the syntax") from None
        try:
            msgspec.convert(data, Config)
        except msgspec.ValidationError as exc:
            raise _describe(exc, str(path)) from None
    env = _from_env(environ)
    merged = _merge(data, env)
    if overrides:
        merged = _merge(merged, overrides)
    try:
        return msgspec.convert(merged, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _describe(exc, "environment or flags" if env or overrides else origin, env) from None

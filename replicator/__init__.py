"""replicator: move a live application from SQLite to PostgreSQL with near-zero downtime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("replicator")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

"""The snapshot: loading every table once, shared between processes, offline export/import, online re-load."""

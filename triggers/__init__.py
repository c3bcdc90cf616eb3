"""The SQLite capture side: opening the source safely, reading its schema, the change journal,
its triggers, and the wake-up signal.

This package never imports ``replicator`` (its errors derive from ``errorbase.OperatorError``, the base
the three packages share).
"""

"""The SQLite capture side: opening the source safely, reading its schema, the change journal,
its triggers, and the wake-up signal.

This package never imports ``replicator``; of ``checkpoints`` it imports only :mod:`checkpoints.errors`
(its errors derive from ``OperatorError``, the base the three packages share).
"""

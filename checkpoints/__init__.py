"""Checksummed, hash-chained checkpoints: the durable record of what was applied, and its audit.

This package never imports ``replicator``: an auditor can verify an exported chain with it alone.
"""

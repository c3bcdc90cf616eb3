"""Checksummed, hash-chained checkpoints: the durable record of what was applied, and its audit.

This package never imports ``replicator`` or ``triggers`` (its :mod:`checkpoints.errors` holds the error base the three
packages share): an auditor can verify an exported chain with it alone (``python -m checkpoints verify
chain.jsonl``), with no database.

Modules, each with its contract in its docstring:

* :mod:`checkpoints.digest` -- THE canonical row encoding and the order-independent ``TableDigest``
  used by snapshot checksums, ``verify`` and checkpoint content digests;
* :mod:`checkpoints.model` -- the ``Checkpoint`` record, its canonical body and hash, ``genesis`` and
  ``next_checkpoint``, and the chain's grammar (``FOLLOWERS``: batches until the cutover, then the rollback
  window's ``reverse`` records, ended by a ``rollback`` or a ``finalize``);
* :mod:`checkpoints.store` -- the chain in PostgreSQL: ``ensure_schema``, ``append`` (in the caller's
  transaction), ``latest``, ``last_forward`` (where SQLite's journal stands, after the cutover too), ``read``,
  ``get``;
* :mod:`checkpoints.findings` -- what a verification reports: ``Problem``, ``Finding``, ``Report``;
* :mod:`checkpoints.audit` -- ``verify`` (every finding), ``verify_db``, ``verify_file`` and
  ``verify_against`` an earlier export;
* :mod:`checkpoints.exportfile` -- ``export`` the chain for an auditor and ``read_file`` it back;
* :mod:`checkpoints.anchor` -- the ``Anchor`` kept in the source and ``check_anchor``;
* :mod:`checkpoints.compaction` -- ``compact`` the chain's oldest checkpoints into one record;
* :mod:`checkpoints.ledger` -- the chain added up: each table's count and checksum from the genesis
  through the cutover (``at_cutover``: what the cutover certificate records) or the head (``at_end``);
* :mod:`checkpoints.report` -- rendering for the ``replicator checkpoints`` commands.
"""

"""What the test modules share, one home each, so a test module never imports another test module
(importing one ties two unrelated files together and invites its fixtures along).

- ``source``: the SQLite source (``make_source``: WAL, schema, rows, capture installed unless asked not
  to), ``app()`` connections written the way apps write, ``writable()`` after a fence.
- ``daemon``: ``DaemonProcess``, the one launcher of ``replicator run`` as a subprocess (logs to files,
  ``wait_streaming`` on the daemon's own state row, ``stop`` = SIGTERM, returning code and log);
  ``Daemon``, the same loop in a thread of this process; ``cfg``/``conf``.
- ``compare``: ``drain`` + ``check_same``, the drain-and-compare (rows, chain, running digests), over
  the independent row oracle ``assert_same``.
- ``cli``: the CLI as an operator runs it (``run_cli``, ``Ran``, ``status_json``).
- ``fixtures``: fixtures several modules use (``unprivileged_dsn``, ``scram_server``), registered by
  tests/conftest.py; ``migrated``: a real migration's files for the audit tests and their tampering.
- ``chain``, ``convert``, ``export``, ``snapshot``, ``scram``, ``workload``: helpers two modules share.
"""

"""The rollback window: after a cutover, PostgreSQL's changes flow back into the fenced SQLite file.

Why: the first hours on PostgreSQL are when a slow plan or an ORM difference shows; going back must not
throw away what the app wrote there meanwhile. So the cutover installs a *reverse capture* in PostgreSQL
(key-only triggers into a journal in the state schema, in the app's own transactions), ``replicator run``
after a cutover keeps the old SQLite file current from it (state-based, exactly once, each batch a
``reverse`` checkpoint in the same chain), ``replicator rollback`` fences PostgreSQL, drains, proves both sides
equal and un-fences SQLite, and ``replicator finalize`` ends the window.

One module per step: ``capture`` (PostgreSQL's reverse journal and triggers, and PostgreSQL's write fence),
``writeback`` (a PostgreSQL value in the storage form the app used in SQLite, exact or refused; the forms
learned from the app's own rows in ``writeback_forms``, the spellings in ``writeback_spell``),
``batch`` (one reverse batch read from PostgreSQL), ``writer`` (one batch written into SQLite, position
and checkpoint exactly once), ``loop`` (the daemon's reverse direction), ``rollback`` (its certificate in
``rollback_certificate``) and ``finalize``.
"""

"""The offline path: ``export`` a SQLite file to JSON Lines, ``verify-export`` it, ``import`` it.

Why an export at all: some targets cannot be reached from the app's host, and some operators want
an artefact they can checksum, archive and inspect before anything touches PostgreSQL. The export
is therefore exact (every SQLite value round-trips with its storage class) and self-describing.

One module per concern: the format (``manifest``: the directory's layout and the manifest;
``codec``: one SQLite value as JSON and back), writing it (``export``), reading it (``reader``),
checking it (``verifier``: what ``verify-export`` runs, and the checksums every import checks
first) and loading it into PostgreSQL through the snapshot's own COPY path (``importer``).
"""

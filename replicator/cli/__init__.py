"""The replicator command line and its generated reference."""

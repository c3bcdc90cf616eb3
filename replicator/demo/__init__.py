"""replicator demo: the whole migration on a live sample app."""

"""The replicator's own state in the target: the state schema, the daemon's phase, tamper checks."""

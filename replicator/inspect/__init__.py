"""Reading where a migration stands: status, verify and its independent reading of both sides."""

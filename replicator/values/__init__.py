"""Converting SQLite values to exact PostgreSQL values, and the quarantine for those that cannot be."""

"""Storage: one data model on SQLite (embedded default) and PostgreSQL, behind repositories."""

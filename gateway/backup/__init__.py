"""Backup and restore of an installation: settings, keys, certificates and the database, in
one encrypted file (docs/operations.md, Backup and restore)."""

"""Retention: after the configured periods the personal data of closed and of not-progressed
cases is purged; the row, its statistics fields and its audit history stay."""

"""The annual learning report: notifications from before the gateway imported from CSV, and the
report's figures computed from those and the live notifications together (docs/reports.md)."""

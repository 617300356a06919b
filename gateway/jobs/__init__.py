"""Scheduled jobs: APScheduler 3 on the event loop, a persistent job store, one leader."""

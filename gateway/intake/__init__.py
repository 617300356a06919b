"""Intake: turning what an agency sends into a validated canonical notification."""

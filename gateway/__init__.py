"""The CMR notification gateway of the Safeguarding Board for Northern Ireland."""

"""The secretariat's, panel members' and administrators' pages on the web listener."""

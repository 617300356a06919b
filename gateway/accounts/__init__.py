"""People's accounts on the web listener: set-up links, passwords, TOTP, lockout, sessions."""

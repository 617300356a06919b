"""What the pages for people share: templates, the stylesheet, CSRF and rate limits."""

"""Browser tests: headless Chromium against a real app server."""

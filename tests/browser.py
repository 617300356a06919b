"""A real browser for the tests: Debian's Chromium driven by Playwright. Missing Chromium
skips the browser tests on a developer's machine and fails them under CMR_TEST_STRICT=1."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CMR_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture
async def browser_context() -> AsyncIterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CMR_TEST_STRICT") == "1":
            pytest.fail(f"the browser tests need {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        # The development CA is not in Chromium's store; TLS itself is tested elsewhere.
        context = await browser.new_context(ignore_https_errors=True)
        try:
            yield context
        finally:
            await context.close()
            await browser.close()

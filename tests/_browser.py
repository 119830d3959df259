"""A real headless browser for the tests of HTML output (Debian's Chromium).

``.ci/run`` installs Chromium when it is missing and sets
``SPECSIG_REQUIRE_BROWSER=1``, so that there a missing browser fails the
tests instead of skipping them.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium():
    """The browser's executable; skip (or fail, in CI) when there is none."""
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = ("no Chromium found (apt-get install chromium); the HTML report is "
               "tested in a real browser")
    if os.environ.get("SPECSIG_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


def _run(page, profile, *flags, timeout=180):
    """Chromium headless on ``page``; returns (stdout, stderr)."""
    args = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={profile}", *flags, Path(page).resolve().as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def console_messages(stderr):
    """What the page wrote to the console (uncaught errors included)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def load(page, profile):
    """The page's DOM after its scripts ran, and its console messages."""
    dom, stderr = _run(page, profile, "--dump-dom", "--virtual-time-budget=5000")
    return dom, console_messages(stderr)


def screenshot(page, png, profile, width=1200, height=2400):
    """A PNG screenshot of the page, as an (h, w, channels) float array."""
    from matplotlib.image import imread

    _run(page, profile, f"--screenshot={png}", f"--window-size={width},{height}",
         "--hide-scrollbars", "--virtual-time-budget=5000")
    return imread(png)

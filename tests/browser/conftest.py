"""Browser fixtures: one live stack (API + worker on Azurite, stand-in weights) and one Chromium per
module, a fresh page per test that records console errors and Content-Security-Policy violations."""

from __future__ import annotations

import pytest

from tests.conftest import ARTIFACTS, LiveStack, isolated_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

# Runs before any page script: CSP violations are reported here even when the console says nothing.
# They are kept in sessionStorage (one per tab) so that a reload, which several tests do, does not
# wipe what the page before it violated.
WATCH_CSP = """
(() => {
  const key = "__cspViolations";
  const seen = JSON.parse(sessionStorage.getItem(key) || "[]");
  window.__cspViolations = seen;
  document.addEventListener("securitypolicyviolation", (e) => {
    seen.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
    sessionStorage.setItem(key, JSON.stringify(seen));
  });
})();
"""


@pytest.fixture(scope="module")
def stack(azurite, standin_weights, tmp_path_factory):
    """Like tests/conftest.py's live_stack, but shared by every test in a module (starting the
    worker loads the models, which takes seconds)."""
    from processing.storage import Storage

    settings = isolated_settings(azurite, standin_weights)
    Storage(settings).ensure_resources()
    live = LiveStack(settings, tmp_path_factory.mktemp("browser-stack"))
    live.start_api()
    live.start_worker()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class PageWatch:
    """Console errors, uncaught exceptions and CSP violations seen by one page."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def csp_violations(self) -> list[str]:
        """What the probe recorded. Read it before the page closes: a probe that cannot be read, or
        that is not running on the page, fails the check rather than passing for 'no violations'."""
        try:
            violations = self.page.evaluate("window.__cspViolations")
        except Exception as error:
            raise AssertionError(f"could not read the CSP probe: {error}") from error
        assert isinstance(violations, list), f"the CSP probe is not running (window.__cspViolations is {violations!r})"
        return violations

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No console errors (except those containing an allowed fragment) and no CSP violations."""
        errors = [e for e in self.errors if not any(fragment in e for fragment in allow)]
        assert not errors, f"console errors: {errors}"
        violations = self.csp_violations()
        assert not violations, f"CSP violations: {violations}"


def open_page(context, url: str):
    page = context.new_page()
    page.add_init_script(WATCH_CSP)
    watch = PageWatch(page)
    response = page.goto(url)
    assert response is not None and response.status == 200, response and response.status
    # The page must be running under the strict policy the API sends, or the checks prove nothing.
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    try:
        page.wait_for_selector("#opt-strength")  # options are built from /api/info
    except Exception as error:
        # A script that failed to load or run says why in the console, not in the timeout.
        raise AssertionError(f"the page did not build its options; console: {watch.errors}") from error
    return page, watch

"""The small-faces control on the page, in Chromium against the real local stack: it explains
itself, its choice reaches the job, and the card says so."""

from __future__ import annotations

import httpx
import pytest

from tests.browser.conftest import open_page
from tests.conftest import encoded
from tests.integration.test_choose_faces import three_faces

pytestmark = pytest.mark.browser


def test_the_small_faces_control_explains_itself_and_reaches_the_job(browser, stack, tmp_path):
    photo = tmp_path / "portrait.png"
    photo.write_bytes(encoded(three_faces()[:, :380]))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page, watch = open_page(context, stack.url)
    page.click(".options-more summary")
    field = page.locator(".field[data-option=small_faces]")
    assert "searched again" in field.inner_text() and field.locator("input[type=radio]").count() == 2
    assert page.is_checked("#opt-small_faces-auto")
    page.click("label[for=opt-small_faces-off]")
    page.set_input_files("#file-input", str(photo))

    card = page.locator(".job").first
    page.wait_for_selector(".job[data-status=succeeded]", timeout=180_000)
    job = httpx.get(f"{stack.url}/api/jobs/{card.get_attribute('data-job-id')}", timeout=10).json()
    assert job["options"]["small_faces"] == "off" and job["timings"]["detect_pass2"] == 0
    assert "no small-face search" in card.locator(".job-meta").inner_text()
    watch.assert_clean()
    context.close()

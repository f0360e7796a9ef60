"""The old-photo options on the page, in Chromium against the real local stack: choosing faces
on a group photo (the boxes over the photo, a click leaves one out, only the chosen ones
change), and the colour and texture controls with their explanations reaching the job."""

from __future__ import annotations

import io

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import open_page
from tests.conftest import encoded
from tests.integration.test_choose_faces import FACE_X, three_faces

pytestmark = pytest.mark.browser


@pytest.fixture
def fresh(browser):
    """A context of its own: the options these tests set stay out of the other tests' pages."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


def test_choose_two_of_three_faces_and_only_those_change(fresh, stack, tmp_path):
    photo = tmp_path / "family.png"
    photo.write_bytes(encoded(three_faces()))
    page, watch = open_page(fresh, stack.url)
    page.click("label[for=opt-detect_only]")
    page.click("label[for=opt-upscale-1]")  # the result in the photo's own pixels
    page.click(".options-more summary")
    page.click("label[for=opt-blend_mask-box]")  # quicker: no parsing network
    page.set_input_files("#file-input", str(photo))

    boxes = page.locator(".job .face-box")
    boxes.nth(2).wait_for(timeout=120_000)
    assert boxes.count() == 3
    wait = "el => el.complete && el.naturalWidth > 0"
    page.wait_for_function(f"() => ({wait})(document.querySelector('.job .chooser-img'))")
    # The box over the middle face, found by where it is drawn on the photo.
    centres = [box.bounding_box() for box in boxes.all()]
    middle = sorted(range(3), key=lambda i: centres[i]["x"])[1]
    restore = page.locator(".job .restore-chosen")
    assert restore.inner_text() == "Restore all 3 faces"
    boxes.nth(middle).click()
    assert boxes.nth(middle).get_attribute("aria-pressed") == "false"
    assert restore.inner_text() == "Restore 2 faces"
    restore.click()

    card = page.locator(".job").first
    page.wait_for_selector(".job[data-status=succeeded] .result .stage", timeout=180_000)
    job_id = card.get_attribute("data-job-id")
    job = httpx.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).json()
    assert job["face_count"] == 2 and job["options"]["face_boxes"]
    result = Image.open(io.BytesIO(httpx.get(f"{stack.url}{job['links']['result']}", timeout=30).content))
    result = cv2.cvtColor(np.asarray(result.convert("RGB")), cv2.COLOR_RGB2BGR)
    original = three_faces()
    changed = [bool(np.any(result[:, x:x + 320] != original[:, x:x + 320])) for x in FACE_X]
    assert changed == [True, False, True]
    watch.assert_clean()
    page.close()


def test_colour_and_texture_controls_explain_themselves_and_reach_the_job(fresh, stack, tmp_path):
    photo = tmp_path / "grandma.png"
    photo.write_bytes(encoded(cv2.cvtColor(cv2.cvtColor(three_faces()[:, :380], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)))
    page, watch = open_page(fresh, stack.url)
    colour = page.locator(".field[data-option=color]")
    assert "black-and-white" in colour.inner_text() and colour.locator("input[type=radio]").count() == 3
    assert page.is_checked("#opt-color-auto")
    texture = page.locator("#opt-texture")
    assert texture.get_attribute("type") == "range" and page.locator("#opt-texture-out").inner_text() == "off"
    texture.fill("0.5")
    assert page.locator("#opt-texture-out").inner_text() == "50%"
    page.click("label[for=opt-color-keep]")
    page.set_input_files("#file-input", str(photo))

    card = page.locator(".job").first
    page.wait_for_selector(".job[data-status=succeeded]", timeout=180_000)
    job = httpx.get(f"{stack.url}/api/jobs/{card.get_attribute('data-job-id')}", timeout=10).json()
    assert job["options"]["color"] == "keep" and job["options"]["texture"] == 0.5 and job["tone"] == "monochrome"
    assert "photo's tone" in card.locator(".job-meta").inner_text()
    watch.assert_clean()
    page.close()

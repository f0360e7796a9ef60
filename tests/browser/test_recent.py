"""The photos the page remembers (localStorage) come back once each, and a photo added while the
page is still starting is neither shown twice nor the reason the remembered ones are forgotten.

Before: the remembered list was restored only once GET /api/info had answered, while uploads were
already wired. An upload finished in that time saved the list as shown (the new photo alone, so the
remembered ones were gone), and the restore then found the new photo in it and showed it twice.
/api/info is held back here (the real answer, released later) to open that window every time."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.browser.conftest import WATCH_CSP, PageWatch
from tests.hardening.helpers import png_bytes

pytestmark = pytest.mark.browser

JOBS_KEY = "face-restore.jobs.v1"


def _count(page, job_id: str) -> int:
    return page.locator(f"[data-job-id='{job_id}']").count()


def test_a_photo_added_while_the_page_starts_is_shown_once_and_keeps_the_remembered_ones(browser, stack, tmp_path):
    earlier = httpx.post(f"{stack.url}/api/jobs", files={"file": ("earlier.png", png_bytes(72, 60))},
                         data={"upscale": "1", "blend_mask": "box"}, timeout=30).json()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        memo = [{"id": earlier["id"], "filename": "earlier", "expires_at": earlier["expires_at"], "status": "queued"},
                {"id": earlier["id"], "filename": "earlier", "expires_at": earlier["expires_at"], "status": "queued"}]
        context.add_init_script(f"if (!sessionStorage.getItem('seeded')) {{ sessionStorage.setItem('seeded', '1'); "
                                f"localStorage.setItem({json.dumps(JOBS_KEY)}, {json.dumps(json.dumps(memo))}); }}")
        page = context.new_page()
        page.add_init_script(WATCH_CSP)
        watch = PageWatch(page)
        held = []
        page.route("**/api/info", lambda route: route.continue_() if held else held.append(route))  # the first only
        page.goto(stack.url)
        deadline = 100
        while not held and deadline:  # the page asks for /api/info once its scripts have run
            page.wait_for_timeout(100)
            deadline -= 1
        assert held, "the page never asked for /api/info"

        photo = tmp_path / "new.png"
        photo.write_bytes(png_bytes(80, 64, colour=(40, 90, 200)))
        page.set_input_files("#file-input", str(photo))
        new_card = page.locator(".job[data-job-id]:not([data-job-id='%s'])" % earlier["id"])
        new_card.wait_for(timeout=30000)  # uploaded and saved
        new_id = new_card.get_attribute("data-job-id")

        held[0].continue_()
        page.wait_for_selector("#opt-strength")  # /api/info answered: the page is fully started
        page.wait_for_timeout(500)
        assert (_count(page, new_id), _count(page, earlier["id"])) == (1, 1)
        stored = [entry.get("id") for entry in json.loads(page.evaluate(f"localStorage.getItem('{JOBS_KEY}')"))]
        assert sorted(stored) == sorted([new_id, earlier["id"]])

        page.reload()
        page.wait_for_selector("#opt-strength")
        page.locator(f"[data-job-id='{new_id}']").wait_for()
        assert (_count(page, new_id), _count(page, earlier["id"])) == (1, 1)
        watch.assert_clean()
    finally:
        context.close()

"""The page, end to end in Chromium against the real local stack (API + worker on Azurite).

One photo is restored through the page (module fixture `restored`); the tests after it compare,
download, reload and finally delete it. Each test opens its own page in the shared browser
context, so the job it sees came back from localStorage.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import open_page

pytestmark = pytest.mark.browser

# Chromium logs every 4xx/5xx answer as a console error; tests that provoke one allow exactly that.
LOAD_FAILED = "Failed to load resource: the server responded with a status of"
JOBS_KEY = "face-restore.jobs.v1"  # where the page remembers its photos (localStorage)


def clip_left(page) -> float:
    """Where the restored image's clip starts, in percent of its width."""
    style = page.eval_on_selector(".job .img-after", "el => el.style.clipPath")
    match = re.fullmatch(r"inset\(0(?:px)? 0(?:px)? 0(?:px)? ([\d.]+)%\)", style)
    assert match, style
    return float(match.group(1))


def slider_value(page) -> int:
    return int(page.get_attribute(".job [role=slider]", "aria-valuenow"))


def wait_for_images(page, selector: str) -> None:
    """Until every image the selector matches has loaded; none at all does not count as loaded."""
    page.wait_for_function("""selector => {
        const imgs = [...document.querySelectorAll(selector)];
        return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
    }""", arg=selector)


@pytest.fixture(scope="module")
def context(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context
    context.close()


# Every state a card is rendered in, and the stage texts it shows while waiting or running, recorded
# in the page as they happen (a render is one task, so no state is missed between two looks).
RECORD_CARD = """() => {
    const log = window.__cardLog = { statuses: [], stages: [] };
    new MutationObserver(() => {
        const card = document.querySelector(".job");
        if (!card) return;
        const status = card.dataset.status;
        if (log.statuses[log.statuses.length - 1] !== status) log.statuses.push(status);
        const stage = card.querySelector(".stage-text").textContent;
        if ((status === "queued" || status === "running") && !log.stages.includes(stage)) log.stages.push(stage);
    }).observe(document.querySelector("#jobs"), { subtree: true, childList: true, characterData: true, attributes: true });
}"""

# Counts the page's status requests as it makes them, so a count read later is exact.
COUNT_STATUS_POLLS = r"""(() => {
  window.__statusPolls = 0;
  const pageFetch = window.fetch;
  window.fetch = function (input, init) {
    if (/\/api\/jobs\/\w+$/.test(String(input))) window.__statusPolls += 1;
    return pageFetch.call(this, input, init);
  };
})();"""


@pytest.fixture(scope="module")
def restored(browser, context, stack, astronaut_png, tmp_path_factory):
    """Upload the astronaut through the page and follow its card to done. Returns what was seen.

    The upload runs in a context of its own whose clock Playwright controls (time flows as usual
    until the end, when two minutes are skipped to show that no poll follows "succeeded"); what that
    page remembers (the job, the options) is then handed to the shared context."""
    photo = tmp_path_factory.mktemp("photos") / "astronaut.png"
    photo.write_bytes(astronaut_png)
    own = browser.new_context(viewport={"width": 1280, "height": 900})
    own.clock.install()
    own.add_init_script(COUNT_STATUS_POLLS)
    page, watch = open_page(own, stack.url)
    status_requests: list[float] = []
    page.on("request", lambda r: r.method == "GET" and re.search(r"/api/jobs/\w+$", r.url)
            and status_requests.append(time.monotonic()))

    page.click(".options-more summary")
    page.click("label[for=opt-blend_mask-box]")  # "Soft square": skips the parsing network, quicker
    page.evaluate(RECORD_CARD)
    page.set_input_files("#file-input", str(photo))

    card = page.locator(".job").first
    started = time.monotonic()
    ended = ", ".join(f".job[data-status={s}]" for s in ("succeeded", "failed", "rejected", "cancelled"))
    try:
        page.wait_for_selector(ended, state="attached", timeout=150_000)
    except PlaywrightTimeoutError:
        pytest.fail(f"the card never finished: {card.inner_text()}\n{stack.logs()}")
    finished = time.monotonic()
    polls = len(status_requests)
    log = page.evaluate("window.__cardLog")
    job_id = card.get_attribute("data-job-id")
    assert log["statuses"][-1] == "succeeded", (log, card.inner_text(), stack.logs())
    # Stop polling at a terminal state: two minutes on (every delay the page may choose is at most
    # one), still no status request after the one that said "succeeded".
    polls_at_done = page.evaluate("window.__statusPolls")
    page.clock.run_for("02:00")
    polls_after = page.evaluate("window.__statusPolls") - polls_at_done
    result = {
        "job_id": job_id, "seen": log["statuses"], "stages": set(log["stages"]), "polls": polls,
        "polls_after": polls_after, "seconds": finished - started,
    }
    watch.assert_clean()
    remembered = page.evaluate("() => ({ ...localStorage })")
    page.close()
    own.close()

    shared = context.new_page()
    shared.goto(f"{stack.url}/api/health")  # the page's origin, without running the page
    shared.evaluate("items => { for (const [key, value] of Object.entries(items)) localStorage.setItem(key, value); }", remembered)
    shared.close()
    return result


def test_page_loads_with_standin_banner_and_options(context, stack):
    page, watch = open_page(context, stack.url)
    banner = page.locator("#standin-banner")
    assert banner.is_visible()
    assert "Demo mode: stand-in model weights — restored faces are meaningless" in banner.inner_text()
    # Options come from the API's schema, defaults selected, each with a short explanation.
    assert page.is_checked("#opt-model-1_4")
    assert page.is_checked("#opt-upscale-2")
    assert page.locator("#opt-strength").input_value() == "1"
    assert "keeps the original faces" in page.inner_text("[data-option=strength] .field-help")
    # Quality only matters for JPEG/WebP.
    page.click(".options-more summary")
    assert not page.is_visible("[data-option=quality]")
    page.click("label[for=opt-output_format-webp]")
    assert page.is_visible("[data-option=quality]")
    page.click("#reset-options")
    assert page.is_checked("#opt-output_format-png", ) and not page.is_visible("[data-option=quality]")
    # The drop zone is reachable by keyboard (the file input is focusable behind its label).
    page.focus("#file-input")
    assert page.evaluate("document.activeElement.id") == "file-input"
    watch.assert_clean()
    page.close()


def test_upload_shows_live_status_and_polls_politely(restored):
    assert "queued" in restored["seen"] or "running" in restored["seen"], restored
    assert any(re.match(r"(Waiting|Restoring|Detecting|Compositing|Starting)", s) for s in restored["stages"]), restored
    # Retry-After is 1 s: about one status request a second, never a tight loop.
    assert restored["polls"] <= restored["seconds"] + 3, restored
    assert restored["polls_after"] == 0, restored


def test_compare_slider_by_keyboard_and_drag(context, stack, restored):
    page, watch = open_page(context, stack.url)
    card = page.locator(f".job[data-job-id='{restored['job_id']}']")
    page.wait_for_selector(f".job[data-job-id='{restored['job_id']}'][data-status=succeeded]", timeout=15000)
    page.wait_for_function("() => document.querySelector('.job .img-after') && document.querySelector('.job .img-after').complete")
    slider = card.locator("[role=slider]")
    assert slider.get_attribute("aria-valuemin") == "0" and slider.get_attribute("aria-valuemax") == "100"
    assert slider_value(page) == 50 and abs(clip_left(page) - 50) < 0.5

    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert slider_value(page) == 53 and abs(clip_left(page) - 53) < 0.5
    page.keyboard.press("Shift+ArrowLeft")
    assert slider_value(page) == 43
    page.keyboard.press("Home")
    assert slider_value(page) == 0 and clip_left(page) == 0
    page.keyboard.press("End")
    assert slider_value(page) == 100 and clip_left(page) == 100

    # Drag the handle with the mouse to a quarter of the width.
    stage = card.locator(".slider-stage").bounding_box()
    handle = slider.bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(stage["x"] + stage["width"] * 0.5, stage["y"] + stage["height"] / 2, steps=4)
    page.mouse.move(stage["x"] + stage["width"] * 0.25, stage["y"] + stage["height"] / 2, steps=4)
    page.mouse.up()
    assert abs(slider_value(page) - 25) <= 1 and abs(clip_left(page) - 25) < 1.5
    # A click anywhere on the picture moves the divider there.
    page.mouse.click(stage["x"] + stage["width"] * 0.7, stage["y"] + stage["height"] * 0.3)
    assert abs(slider_value(page) - 70) <= 1
    watch.assert_clean()
    page.close()


def test_side_by_side_zoom_and_face_crops(context, stack, restored):
    page, watch = open_page(context, stack.url)
    card = page.locator(f".job[data-job-id='{restored['job_id']}']")
    card.locator(".viewer").wait_for(timeout=15000)
    # Per-face before/after crops, from faces[i].before/after.
    faces = card.locator(".face")
    assert faces.count() == 1
    wait_for_images(page, ".face img")
    assert "1 face restored" in card.locator(".result-facts").inner_text()

    card.get_by_role("button", name="Side by side").click()
    assert card.locator(".sbs").is_visible() and not card.locator(".slider-stage").is_visible()
    wait_for_images(page, ".sbs img")
    card.get_by_role("button", name="Zoom 2 times").click()
    widths = page.eval_on_selector_all(".sbs .canvas", "cs => cs.map(c => c.getBoundingClientRect().width / c.parentElement.clientWidth)")
    assert all(abs(w - 2) < 0.05 for w in widths), widths
    # The two panes scroll together: scroll the left one with the mouse wheel.
    scroll_positions = "ss => ss.map(s => [s.scrollLeft, s.scrollTop])"
    before = page.eval_on_selector_all(".sbs .scroller", scroll_positions)
    card.locator(".sbs .stage").first.scroll_into_view_if_needed()
    left_pane = card.locator(".sbs .stage").first.bounding_box()
    page.mouse.move(left_pane["x"] + left_pane["width"] / 2, left_pane["y"] + left_pane["height"] / 2)
    page.mouse.wheel(-80, -60)
    # Until, in one frame, the left pane has moved and the right one stands where it does.
    together = """before => {
        const now = [...document.querySelectorAll('.sbs .scroller')].map(s => [s.scrollLeft, s.scrollTop]);
        const moved = now[0][0] !== before[0][0] || now[0][1] !== before[0][1];
        return moved && now[0][0] === now[1][0] && now[0][1] === now[1][1];
    }"""
    try:
        page.wait_for_function(together, arg=before, polling="raf", timeout=5000)
    except PlaywrightTimeoutError:
        pytest.fail(f"the panes did not scroll together: {before} -> {page.eval_on_selector_all('.sbs .scroller', scroll_positions)}")

    card.get_by_role("button", name="Slider").click()
    card.get_by_role("button", name="Zoom the comparison to face 1").click()
    assert card.get_by_role("button", name="Zoom 4 times").get_attribute("aria-pressed") == "true"
    scroller = card.locator(".slider-stage .scroller")
    assert "zoomed" in scroller.get_attribute("class")
    # Zoomed onto the face: the astronaut's face is in the upper middle of the photo.
    view = page.eval_on_selector(".slider-stage .scroller", "s => [(s.scrollLeft + s.clientWidth / 2) / s.scrollWidth, (s.scrollTop + s.clientHeight / 2) / s.scrollHeight]")
    assert 0.3 < view[0] < 0.6 and 0.1 < view[1] < 0.35, view
    card.get_by_role("button", name="Fit to frame").click()
    assert "zoomed" not in scroller.get_attribute("class")
    watch.assert_clean()
    page.close()


def test_download_matches_api_result(context, stack, restored, artifacts):
    page, watch = open_page(context, stack.url)
    card = page.locator(f".job[data-job-id='{restored['job_id']}']")
    download_link = card.get_by_role("link", name="Download restored astronaut")
    download_link.wait_for(timeout=15000)
    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert download.suggested_filename == "astronaut-restored.png"
    from_page = open(download.path(), "rb").read()
    from_api = httpx.get(f"{stack.url}/api/jobs/{restored['job_id']}/result", timeout=30).content
    assert from_page == from_api and from_page.startswith(b"\x89PNG")

    wait_for_images(page, ".job img")
    page.screenshot(path=str(artifacts / "page-desktop.png"), full_page=True)
    watch.assert_clean()
    page.close()


def test_phone_layout_and_touch(browser, stack, restored, artifacts):
    """A phone-sized viewport with touch: the job (from this context's own storage) is added via the
    API's id in localStorage, the slider follows a tap, and nothing overflows sideways."""
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                is_mobile=True, has_touch=True)
    try:
        page, watch = open_page(phone, stack.url)
        page.evaluate("""id => localStorage.setItem('face-restore.jobs.v1',
            JSON.stringify([{id, filename: 'astronaut', status: 'succeeded'}]))""", restored["job_id"])
        page.reload()
        card = page.locator(f".job[data-job-id='{restored['job_id']}']")
        card.locator(".viewer").wait_for(timeout=15000)
        wait_for_images(page, ".job img")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        stage = card.locator(".slider-stage")
        stage.scroll_into_view_if_needed()
        box = stage.bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.6)
        assert abs(slider_value(page) - 80) <= 1
        page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)
        watch.assert_clean()
    finally:
        phone.close()


def test_not_an_image_is_explained(context, stack, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("these are my holiday notes, not a photo\n")
    page, watch = open_page(context, stack.url)
    page.set_input_files("#file-input", str(fake))
    card = page.locator(".job", has_text="holiday")
    card.locator(".job-error").wait_for(timeout=15000)
    assert card.get_attribute("data-status") == "rejected"
    error = card.locator(".job-error").inner_text()
    assert "This file isn’t a photo we can read." in error
    assert "JPEG, PNG or WebP" in error
    assert card.locator(".pill").inner_text() == "Not accepted"
    # Nothing was stored for it: dismissing is local and immediate.
    card.get_by_role("button", name="Dismiss holiday.jpg").click()
    assert card.count() == 0
    watch.assert_clean(allow=(f"{LOAD_FAILED} 415",))
    page.close()


def test_too_big_is_refused_before_uploading(context, stack, tmp_path):
    page, watch = open_page(context, stack.url)
    limit = page.evaluate("fetch('/api/info').then(r => r.json()).then(i => i.max_upload_bytes)")
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate(limit + 1)
    posts = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.set_input_files("#file-input", str(big))
    card = page.locator(".job", has_text="huge")
    card.locator(".job-error").wait_for(timeout=5000)
    text = card.inner_text().replace("\u00a0", " ")
    assert "This file is too big." in text and "20 MB" in text
    assert posts == []
    watch.assert_clean()
    page.close()


def test_paste_and_drop_add_photos(context, stack):
    """Paste one image, drop two: each reaches the API (these bytes are not really images, so the
    API refuses them without giving the worker anything to do)."""
    page, watch = open_page(context, stack.url)
    page.evaluate("""() => {
        const files = (...names) => {
            const data = new DataTransfer();
            for (const name of names) data.items.add(new File(["not really a picture"], name, { type: "image/png" }));
            return data;
        };
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: files("clip.png"), bubbles: true, cancelable: true }));
        const zone = document.querySelector("#dropzone");
        const dropped = files("one.png", "two.png");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: dropped, bubbles: true, cancelable: true }));
        }
    }""")
    pasted = page.locator(".job", has_text="clip.png")
    pasted.locator(".job-error").wait_for(timeout=10000)
    assert "isn’t a photo we can read" in pasted.inner_text()
    # Two files at once go as one batch; the API accepted none of them.
    group = page.locator(".batch").first
    group.locator(".job-error").wait_for(timeout=10000)
    assert group.locator(".batch-name").inner_text() == "2 photos"
    assert "None of these files is a photo we can read." in group.inner_text()
    group.get_by_role("button", name="Dismiss: 2 photos").click()
    pasted.get_by_role("button", name="Dismiss clip.png").click()
    assert page.locator(".batch").count() == 0 and pasted.count() == 0
    # Chromium logs the refusals (415 for the single file, 422 for a batch with no image in it).
    watch.assert_clean(allow=(f"{LOAD_FAILED} 415", f"{LOAD_FAILED} 422"))
    page.close()


def test_several_photos_form_a_batch_with_one_zip(context, stack, restored, astronaut_png, tmp_path):
    import io
    import zipfile

    paths = []
    for name in ("first.png", "second.png"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(astronaut_png)
    page, watch = open_page(context, stack.url)
    page.click("label[for=opt-upscale-1]")  # smaller results, quicker
    page.set_input_files("#file-input", [str(p) for p in paths])
    group = page.locator(".batch").first
    page.wait_for_selector(".batch[data-status=succeeded]", timeout=150000)
    batch_id = group.get_attribute("data-batch-id")
    members = group.locator(".job.compact")
    assert members.count() == 2
    assert "2 restored" in group.locator(".batch-head .job-meta").inner_text()

    with page.expect_download() as info:
        group.get_by_role("link", name="Download all 2 (zip)").click()
    archive = zipfile.ZipFile(io.BytesIO(open(info.value.path(), "rb").read()))
    names = sorted(archive.namelist())
    assert names == ["001-first-restored.png", "002-second-restored.png"], names
    for name, member in zip(names, [members.nth(0), members.nth(1)]):
        job_id = member.get_attribute("data-job-id")
        assert archive.read(name) == httpx.get(f"{stack.url}/api/jobs/{job_id}/result", timeout=30).content

    # A photo of the batch opens its comparison on request.
    first = members.nth(0)
    assert not first.locator(".viewer").is_visible()
    first.get_by_role("button", name="Compare for first").click()
    first.locator("[role=slider]").wait_for()
    assert first.get_by_role("button", name="Hide comparison for first").get_attribute("aria-expanded") == "true"

    # "Download all" across the page: the batch as its zip plus the single photo.
    downloads = []

    def second_download(download) -> bool:
        downloads.append(download)
        return len(downloads) == 2

    with page.expect_event("download", predicate=second_download, timeout=10000):
        page.get_by_role("button", name="Download all (3)").click()
    assert sorted(d.suggested_filename for d in downloads) == sorted(
        ["astronaut-restored.png", f"restored-{batch_id[:8]}.zip"])

    group.get_by_role("button", name="Delete all: 2 photos").click()
    group.get_by_role("button", name="Confirm: delete every photo of this group from the server").click()
    page.wait_for_selector(f".batch[data-batch-id='{batch_id}']", state="detached", timeout=10000)
    assert httpx.get(f"{stack.url}/api/batches/{batch_id}", timeout=10).status_code == 404
    page.click("#reset-options")
    watch.assert_clean()
    page.close()


def test_busy_service_is_retried_then_cancelled(context, stack, astronaut_png, tmp_path):
    """A 429 on upload is explained and retried after Retry-After; a job can be cancelled while it waits."""
    photo = tmp_path / "later.png"
    photo.write_bytes(astronaut_png)
    page, watch = open_page(context, stack.url)
    calls = {"n": 0}

    def rate_limit_once(route):
        calls["n"] += 1
        if calls["n"] == 1:
            route.fulfill(status=429, headers={"Retry-After": "2", "Content-Type": "application/json"},
                          body='{"error": {"code": "rate_limited", "message": "too many uploads"}}')
        else:
            route.continue_()

    page.route("**/api/jobs", lambda route: rate_limit_once(route) if route.request.method == "POST" else route.continue_())
    page.set_input_files("#file-input", str(photo))
    card = page.locator(".job", has_text="later")
    page.wait_for_selector(".job[data-status=waiting]", timeout=5000)
    assert "faster than the service allows" in card.locator(".stage-text").inner_text()
    # Sent again by itself once Retry-After has passed.
    page.wait_for_function("() => document.querySelector('.job')?.dataset.jobId", timeout=15000)
    job_id = card.get_attribute("data-job-id")
    assert calls["n"] == 2
    card.get_by_role("button", name="Cancel later").click()
    card.wait_for(state="detached", timeout=10000)
    assert httpx.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).status_code == 404
    watch.assert_clean(allow=(f"{LOAD_FAILED} 429",))
    page.close()


def test_status_errors_back_off_and_recover(context, stack, restored):
    """The service stumbles (503 with Retry-After) when the page asks for a job: the card says so in
    plain words, asks again when told to, and recovers."""
    page, watch = open_page(context, stack.url)
    page.wait_for_selector(f".job[data-job-id='{restored['job_id']}'][data-status=succeeded]", timeout=15000)
    attempts = []

    def stumble(route):
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            route.fulfill(status=503, headers={"Retry-After": "1", "Content-Type": "application/json"},
                          body='{"error": {"code": "storage_unavailable", "message": "storage is temporarily unavailable"}}')
        else:
            route.continue_()

    page.route(f"**/api/jobs/{restored['job_id']}", stumble)
    page.reload()
    card = page.locator(f".job[data-job-id='{restored['job_id']}']")
    page.wait_for_function("() => /hiccup/.test(document.querySelector('.job .stage-text')?.textContent || '')")
    assert "Checking again in 1" in card.locator(".stage-text").inner_text().replace("\u00a0", " ")
    page.wait_for_selector(f".job[data-job-id='{restored['job_id']}'][data-status=succeeded]", timeout=15000)
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.9 and attempts[2] - attempts[1] >= 0.9, attempts  # Retry-After honoured
    watch.assert_clean(allow=(f"{LOAD_FAILED} 503",))
    page.close()


def test_reload_keeps_job_and_delete_removes_it(context, stack, restored):
    page, watch = open_page(context, stack.url)
    job_id = restored["job_id"]
    card = page.locator(f".job[data-job-id='{job_id}']")
    card.locator(".viewer").wait_for(timeout=15000)
    page.reload()
    page.wait_for_selector("#opt-strength")
    card.locator(".viewer").wait_for(timeout=15000)
    assert card.locator(".pill").inner_text() == "Done"

    delete = card.get_by_role("button", name="Delete astronaut")
    delete.click()
    confirm = card.get_by_role("button", name="Confirm: delete astronaut from the server")
    confirm.click()
    card.wait_for(state="detached", timeout=10000)
    assert httpx.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).status_code == 404
    stored = page.evaluate(f"localStorage.getItem('{JOBS_KEY}')")
    assert job_id not in (stored or "")
    # Once the page has restored its list it writes it back (dropping expired entries): a space
    # added here is gone then, and only then can "not in the list" mean anything.
    page.evaluate("key => localStorage.setItem(key, (localStorage.getItem(key) || '[]') + ' ')", JOBS_KEY)
    page.reload()
    page.wait_for_function("key => !localStorage.getItem(key).endsWith(' ')", arg=JOBS_KEY)
    assert page.locator(f".job[data-job-id='{job_id}']").count() == 0
    watch.assert_clean()
    page.close()

/* Face restoration page: upload, follow, compare, download. ES modules, no build step; this one
 * starts the page. Where things are:
 *
 *   api.js            every request to the API (processing/api.py), errors, the server's clock
 *   store.js          the page's state, and the photos remembered in localStorage
 *   errors.js         every error in plain words, with what to do next
 *   options-form.js   the options form, built from the API's schema
 *   service-status.js GET /api/info, the "can't reach" and stand-in weights banners
 *   uploads.js        file input, drag and drop, paste; refusals before uploading
 *   upload-queue.js   single photos upload a couple at a time
 *   job-list.js       the list of photos and groups, "Download all"
 *   job-card.js       one photo's card, from upload to download
 *   batch-group.js    a group of photos sent together, with its zip
 *   card.js           what both kinds of card share (their base class)
 *   viewer.js         the before/after comparison
 *   dom.js, format.js small helpers for elements and for numbers and times
 *
 * config.js, a plain script that runs first, sets window.FACE_API_BASE (a deployment overwrites it).
 */

import { apiUrl, serverNow, TERMINAL } from "./api.js";
import { BatchGroup } from "./batch-group.js";
import { $ } from "./dom.js";
import { JobCard } from "./job-card.js";
import { allCards, downloadAll, updateEmpty } from "./job-list.js";
import { wireOptions } from "./options-form.js";
import { loadInfo } from "./service-status.js";
import { state, store } from "./store.js";
import { wireUploads } from "./uploads.js";

/** The photos remembered from earlier visits, below anything already listed. Called before uploads
 * are wired: it used to wait for /api/info, and a photo uploaded in that time was saved first (a save
 * writes the list as shown, so every remembered photo was dropped) and then found in the list and
 * shown twice. Each job or batch is shown once, whatever the stored list holds. */
function restoreRecent() {
  const shown = new Set(state.items.map((item) => item.id).filter(Boolean));
  const items = [];
  for (const memo of store.load()) {
    const id = memo.batch || memo.id;
    if (shown.has(id)) continue;
    shown.add(id);
    if (memo.batch) {
      items.push(new BatchGroup({ id: memo.batch, memo }));
    } else {
      const card = new JobCard({ id: memo.id, filename: memo.filename });
      card.pendingExpiry = memo.expires_at;
      items.push(card);
    }
  }
  const list = $("#jobs");
  for (const item of items) list.append(item.el);
  state.items.push(...items);
  updateEmpty();
  store.save(); // drops expired entries
  items.forEach((item, i) => setTimeout(() => item.poll(), i * 60));
}

/** Once a second: elapsed times and waiting countdowns move on, and finished work is forgotten
 * once the server has deleted it. */
function tick() {
  for (const item of [...state.items]) {
    if (item.kind === "batch") {
      if (!item.terminal) item.render();
      for (const card of item.cards) if (card.status === "running") card.renderElapsed();
    } else if (item.status === "waiting") {
      item.renderProgress("waiting");
    } else if (!item.localStatus && item.record && !TERMINAL.has(item.record.status)) {
      item.renderElapsed();
    }
    const r = item.record;
    if (r && r.expires_at && Date.parse(r.expires_at) <= serverNow() && item.terminal) {
      if (item.kind === "batch") item.destroy();
      else item.gone();
    }
  }
}

// Module scripts run once the document is parsed, so the page's elements are all there.
const docs = document.querySelector('a[href="docs"]');
if (docs) docs.href = apiUrl("/docs");
wireOptions();
restoreRecent();
wireUploads();
$("#download-all").addEventListener("click", downloadAll);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) for (const item of state.items) item.pollNow();
});
loadInfo();
setInterval(tick, 1000);
// "Kept for …" on finished photos counts down in minutes.
setInterval(() => {
  for (const card of allCards()) if (card.status === "succeeded") card.renderActions("succeeded");
}, 60000);

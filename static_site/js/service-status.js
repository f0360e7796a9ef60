/* What the page shows about the service itself: GET /api/info (upload limit, retention, the
 * options schema), the banner when the service cannot be reached (retried every 10 s), and the
 * banner when it runs with stand-in model weights. */

import { apiFetch } from "./api.js";
import { $, h } from "./dom.js";
import { megabytes } from "./format.js";
import { buildOptionsForm } from "./options-form.js";
import { state } from "./store.js";

let retryTimer = null;

export function showStandinBanner() {
  $("#standin-banner").hidden = false;
}

export async function loadInfo() {
  const banner = $("#service-banner");
  try {
    const { body } = await apiFetch("/api/info");
    state.info = body;
    banner.hidden = true;
    if (body.standin_weights) showStandinBanner();
    $("#limit-hint").textContent = `, up to ${megabytes(body.max_upload_bytes)} each`;
    const hours = body.retention_hours;
    $("#retention-hint").textContent = hours ? ` after ${hours >= 2 ? `${Math.round(hours)} hours` : `${Math.round(hours * 60)} minutes`}` : "";
    buildOptionsForm(body.options || {}, body.models || []);
  } catch (error) {
    $("#options-loading").textContent = "Options will appear once the service can be reached.";
    banner.replaceChildren(
      h("strong", {}, "Can’t reach the restoration service right now. "),
      h("span", {}, "Check your connection; this page will keep trying. "),
      h("button", { type: "button", class: "btn-text", onclick: () => loadInfo() }, "Try now"));
    banner.hidden = false;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(loadInfo, 10000);
  }
}

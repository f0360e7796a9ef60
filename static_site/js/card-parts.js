/* What a photo's card (job-card.js) and a group's card (batch-group.js) have in common: statuses
 * shown as in progress, the progress bar, the error box, backing off after a failed poll, and
 * deleting from the server after a confirmation. Both kinds of card hand themselves in as `item`
 * (with render(), schedulePoll(), destroy() and the fields named below). */

import { apiFetch } from "./api.js";
import { announce } from "./dom.js";
import { explain } from "./errors.js";

/** Statuses in which a card shows its progress bar. */
export const ACTIVE = new Set(["loading", "uploading", "waiting", "queued", "running"]);
/** How often an upload refused for a passing reason (busy, rate limited, network) is sent again. */
export const MAX_UPLOAD_RETRIES = 6;

export function setProgress(root, fraction, text, label, indeterminate) {
  const bar = root.querySelector(".progress");
  const percent = Math.round(fraction * 100);
  bar.classList.toggle("indeterminate", indeterminate);
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", label);
  bar.setAttribute("aria-valuetext", indeterminate ? text : `${text} ${percent}%`);
  root.querySelector(".progress-fill").style.width = `${percent}%`;
  root.querySelector(".stage-text").textContent = text;
}

export function showError(root, error) {
  const box = root.querySelector(".job-error");
  box.hidden = !error;
  if (!error) return;
  const how = explain(error);
  box.querySelector(".job-error-title").textContent = how.title;
  box.querySelector(".job-error-next").textContent = how.next;
  box.dataset.code = error.code || "";
}

/** After a failed poll, back off: the server's Retry-After if it sent one, else 2, 4, 8 ... 30 s
 * (with jitter, so many cards do not retry in step), and say when the next try is. */
export function backOff(item, error) {
  item.pollErrors += 1;
  const wait = error.retryAfter ?? Math.min(30, 2 ** item.pollErrors) * (0.85 + Math.random() * 0.3);
  item.pollNote = `${explain(error).title} Checking again in ${Math.round(wait)}\u00a0s.`;
  item.render();
  item.schedulePoll(wait);
}

/**
 * Delete a photo's or a batch's data on the server, after one in-place confirmation when
 * `ask` is set (the button turns into "… for good?" for five seconds).
 */
export async function deleteWithConfirmation(item, button, { ask, prompt, label, warning, url, done }) {
  if (ask && !item.confirming) {
    item.confirming = true;
    button.textContent = prompt;
    button.classList.add("btn-danger");
    button.setAttribute("aria-label", label);
    announce(warning);
    item.confirmTimer = setTimeout(() => { item.confirming = false; item.render(); }, 5000);
    return;
  }
  clearTimeout(item.confirmTimer);
  button.disabled = true;
  try {
    await apiFetch(url, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) {
      button.disabled = false;
      item.confirming = false;
      item.pollNote = `Couldn’t delete: ${explain(error).title} Please try again.`;
      item.render();
      return;
    }
  }
  announce(done);
  item.destroy(true);
}

/* What a photo's card (job-card.js) and a group's card (batch-group.js) share, as their base class:
 * built from a <template> in index.html, uploaded and sent again after a passing refusal, polled
 * until the server is done with it, shown with a pill, a progress bar and an error box, and
 * deleted from the server after one confirmation.
 *
 * A subclass provides status, terminal, upload(), retry(), render(), statusPath(),
 * received(body, retryAfter), gone(), destroy() and onRemove(); it may refine explain() and
 * pollFloor(). */

import { apiFetch } from "./api.js";
import { $, announce, nextId } from "./dom.js";
import { explain } from "./errors.js";
import { clamp } from "./format.js";

/** Statuses in which a card shows its progress bar. */
export const ACTIVE = new Set(["loading", "uploading", "waiting", "queued", "running"]);

/** Refusals worth sending the same photos again for: passing trouble, or options that can change. */
export const RETRYABLE = new Set(["network", "busy", "rate_limited", "storage_unavailable", "server_error",
  "internal_error", "invalid_request", "auth_required"]);

/** How often an upload refused for a passing reason (busy, rate limited, network) is sent again. */
const MAX_UPLOAD_RETRIES = 6;

const PILLS = {
  loading: "Checking…", uploading: "Uploading", waiting: "Waiting", rejected: "Not accepted",
  queued: "In line", running: "Restoring", succeeded: "Done", failed: "Failed", cancelled: "Cancelled",
};

export class Card {
  /** template: the <template>'s id; root: the element it holds; labelled: what the title names. */
  constructor({ template, root, labelled, titlePrefix }) {
    this.uploadProgress = 0;
    this.uploadAttempts = 0;
    this.pollErrors = 0;
    this.pollNote = "";
    this.timer = null;

    const fragment = $(template).content.cloneNode(true);
    this.el = fragment.querySelector(root);
    this.q = (selector) => this.el.querySelector(selector);
    const titleId = nextId(titlePrefix);
    this.q(".job-name").id = titleId;
    this.q(".job-name").tabIndex = -1;
    this.q(labelled).setAttribute("aria-labelledby", titleId);
    this.q(".remove").addEventListener("click", () => this.onRemove());
    this.q(".retry").addEventListener("click", () => this.retry());
  }

  explain(error) {
    return explain(error);
  }

  // -- upload ------------------------------------------------------------------------------

  /** After a refused upload: if the reason passes by itself, wait (Retry-After, else 2, 4, 8 ...
   * 60 s) and send again, up to six times. False when it is for the person to act. */
  retryLater(error) {
    const how = explain(error);
    if (!how.auto || this.uploadAttempts >= MAX_UPLOAD_RETRIES) return false;
    this.uploadAttempts += 1;
    const seconds = error.retryAfter ?? Math.min(60, 2 ** this.uploadAttempts);
    this.localStatus = "waiting";
    this.waitUntil = Date.now() + seconds * 1000;
    this.waitReason = how.title;
    this.render();
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.removed) this.upload();
    }, seconds * 1000);
    return true;
  }

  waitingText() {
    const left = Math.max(0, Math.ceil((this.waitUntil - Date.now()) / 1000));
    return `${this.waitReason} Sending again in ${left}\u00a0s.`;
  }

  // -- polling -----------------------------------------------------------------------------

  schedulePoll(seconds) {
    clearTimeout(this.timer);
    let delay = clamp(Math.max(seconds, this.pollFloor()), 0.5, 60);
    if (document.hidden) delay = Math.max(delay, 5); // a background tab needs no second-by-second updates
    this.timer = setTimeout(() => this.poll(), delay * 1000);
  }

  /** The shortest wait before the next poll, in seconds. */
  pollFloor() {
    return 0;
  }

  async poll() {
    this.timer = null;
    if (this.removed || !this.id) return;
    try {
      const { body, retryAfter } = await apiFetch(this.statusPath());
      if (this.removed) return;
      this.pollErrors = 0;
      this.pollNote = "";
      this.received(body, retryAfter);
    } catch (error) {
      if (this.removed) return;
      if (error.status === 404) {
        this.gone();
        return;
      }
      this.backOff(error);
    }
  }

  /** Poll at once rather than when the timer says (the tab came back into view). */
  pollNow() {
    if (this.timer && this.id && !this.terminal && !this.localStatus && !this.batch) {
      clearTimeout(this.timer);
      this.poll();
    }
  }

  /** After a failed poll, back off: the server's Retry-After if it sent one, else 2, 4, 8 ... 30 s
   * (with jitter, so many cards do not retry in step), and say when the next try is. */
  backOff(error) {
    this.pollErrors += 1;
    const wait = error.retryAfter ?? Math.min(30, 2 ** this.pollErrors) * (0.85 + Math.random() * 0.3);
    this.pollNote = `${explain(error).title} Checking again in ${Math.round(wait)}\u00a0s.`;
    this.render();
    this.schedulePoll(wait);
  }

  // -- removing ----------------------------------------------------------------------------

  /**
   * Delete a photo's or a batch's data on the server, after one in-place confirmation when
   * `ask` is set (the button turns into "… for good?" for five seconds).
   */
  async confirmThenDelete({ ask, prompt, label, warning, url, done }) {
    const button = this.q(".remove");
    if (ask && !this.confirming) {
      this.confirming = true;
      button.textContent = prompt;
      button.classList.add("btn-danger");
      button.setAttribute("aria-label", label);
      announce(warning);
      this.confirmTimer = setTimeout(() => { this.confirming = false; this.render(); }, 5000);
      return;
    }
    clearTimeout(this.confirmTimer);
    button.disabled = true;
    try {
      await apiFetch(url, { method: "DELETE" });
    } catch (error) {
      if (error.status !== 404) {
        button.disabled = false;
        this.confirming = false;
        this.pollNote = `Couldn’t delete: ${explain(error).title} Please try again.`;
        this.render();
        return;
      }
    }
    announce(done);
    this.destroy(true);
  }

  // -- rendering ---------------------------------------------------------------------------

  showPill(status) {
    const pill = this.q(".pill");
    pill.textContent = PILLS[status] || status;
    pill.className = `pill pill-${status}`;
  }

  showProgress(fraction, text, label, indeterminate) {
    const bar = this.q(".progress");
    const percent = Math.round(fraction * 100);
    bar.classList.toggle("indeterminate", indeterminate);
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-label", label);
    bar.setAttribute("aria-valuetext", indeterminate ? text : `${text} ${percent}%`);
    this.q(".progress-fill").style.width = `${percent}%`;
    this.q(".stage-text").textContent = text;
  }

  showError(error) {
    const box = this.q(".job-error");
    box.hidden = !error;
    if (!error) return;
    const how = this.explain(error);
    box.querySelector(".job-error-title").textContent = how.title;
    box.querySelector(".job-error-next").textContent = how.next;
    box.dataset.code = error.code || "";
  }

  /** The remove button's words, unless it is asking for confirmation right now. */
  labelRemove(label, ariaLabel) {
    if (this.confirming) return;
    const remove = this.q(".remove");
    remove.textContent = label;
    remove.classList.remove("btn-danger");
    remove.disabled = false;
    remove.setAttribute("aria-label", ariaLabel);
  }
}

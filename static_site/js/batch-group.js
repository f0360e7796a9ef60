/* A group of photos sent together (POST /api/batches): one job each, polled as one batch, with
 * one zip at the end. Its photos are compact job cards inside it. An API without batches gets
 * the photos one by one instead. */

import { apiUrl, batchForm, forget, postForm, serverNow } from "./api.js";
import { ACTIVE, Card, RETRYABLE } from "./card.js";
import { $, announce, h } from "./dom.js";
import { clock, megabytes, timeLeft } from "./format.js";
import { JobCard } from "./job-card.js";
import { updateDownloadAll, updateEmpty } from "./job-list.js";
import { optionSummary, submissionFields } from "./options-form.js";
import { state, store } from "./store.js";

export class BatchGroup extends Card {
  constructor({ files = null, options = null, id = null, memo = null }) {
    super({ template: "#batch-template", root: ".batch", labelled: ".batch-card", titlePrefix: "batch-title" });
    this.kind = "batch";
    this.files = files; // [{file, name}] until the server has them
    this.options = options;
    this.fields = options ? submissionFields(options) : {};
    this.id = id;
    this.record = null;
    this.cards = [];
    this.byId = new Map();
    this.dismissed = new Set((memo && memo.dismissed) || []);
    this.shownRejected = new Set();
    this.pendingExpiry = memo && memo.expires_at;
    this.localStatus = id ? null : "uploading";

    this.list = this.q(".batch-jobs");
    if (id) this.el.dataset.batchId = id;
    if (files) {
      this.list.replaceChildren(...files.map(({ name, file }) =>
        h("li", { class: "pending-file" }, h("span", {}, name), h("span", { class: "muted" }, megabytes(file.size)))));
    }
    this.render();
  }

  memo() {
    const r = this.record || {};
    return { batch: this.id, created_at: r.created_at || null, expires_at: r.expires_at || this.pendingExpiry || null,
             dismissed: [...this.dismissed] };
  }

  get status() {
    if (this.localStatus) return this.localStatus;
    if (!this.record) return "loading";
    const c = this.record.counts || {};
    if (this.record.done) return c.succeeded ? "succeeded" : "failed";
    return c.running ? "running" : (c.succeeded || c.failed) ? "running" : "queued";
  }

  get terminal() {
    return this.localStatus === "rejected" || (!this.localStatus && !!this.record && this.record.done);
  }

  // -- upload ------------------------------------------------------------------------------

  upload() {
    this.localStatus = "uploading";
    this.error = null;
    this.render();
    const request = postForm("/api/batches", batchForm(this.files, this.fields), (fraction) => {
      this.uploadProgress = fraction;
      this.render();
    });
    this.abortUpload = request.abort;
    request.promise.then(({ body, retryAfter }) => {
      this.abortUpload = null;
      if (this.removed) {
        forget(`/api/batches/${body.id}`);
        return;
      }
      this.localStatus = null;
      this.id = body.id;
      this.el.dataset.batchId = body.id;
      this.files = null;
      this.list.replaceChildren();
      this.setRecord(body);
      store.save();
      if (!body.done) this.schedulePoll(retryAfter ?? 1);
    }, (error) => {
      this.abortUpload = null;
      if (this.removed || error.code === "aborted") return;
      if (error.status === 404 || error.status === 405) {
        this.splitIntoSingles(); // an API without batches: one job per photo instead
        return;
      }
      if (!this.retryLater(error)) {
        this.localStatus = "rejected";
        this.error = error.code === "file_too_large"
          ? { code: "batch_too_large", message: error.message } : error;
        this.render();
        announce(`${this.files.length} photos: ${this.explain(this.error).title}`);
      }
    });
  }

  retry() {
    this.upload();
  }

  explain(error) {
    if (error.code === "batch_too_large") {
      return { title: "Together these photos are too big to send at once.", next: "Add them in smaller groups." };
    }
    return super.explain(error);
  }

  splitIntoSingles() {
    const cards = this.files.map(({ file, name }) => new JobCard({ file, filename: name, options: this.options }));
    const index = state.items.indexOf(this);
    state.items.splice(index, 1, ...cards);
    for (const card of cards) this.el.before(card.el);
    this.el.remove();
    cards.forEach((card) => card.upload());
  }

  // -- polling -----------------------------------------------------------------------------

  statusPath() {
    return `/api/batches/${this.id}`;
  }

  received(body, retryAfter) {
    this.setRecord(body);
    if (!body.done) this.schedulePoll(retryAfter ?? 1);
  }

  /** The server no longer knows the batch (expired, deleted elsewhere). */
  gone() {
    announce("A group of photos is no longer on the server and was removed from the list.");
    this.destroy();
  }

  setRecord(view) {
    const wasDone = this.record && this.record.done;
    this.record = view;
    const present = new Set();
    for (const summary of view.jobs || []) {
      present.add(summary.id);
      let card = this.byId.get(summary.id);
      if (!card) {
        card = new JobCard({ id: summary.id, filename: summary.filename, batch: this });
        this.byId.set(summary.id, card);
        this.cards.push(card);
        this.list.append(card.el);
      }
      card.applyBatchJob(summary);
    }
    // Members deleted one by one are no longer listed.
    for (const card of [...this.cards]) if (card.id && !present.has(card.id)) card.destroy();
    (view.rejected || []).forEach((rejected, i) => {
      const key = `${i}:${rejected.filename}`;
      if (this.dismissed.has(key) || this.shownRejected.has(key)) return;
      this.shownRejected.add(key);
      const card = new JobCard({ filename: rejected.filename, batch: this });
      card.rejectedKey = key;
      card.reject({ code: rejected.code, message: rejected.message });
      this.cards.push(card);
      this.list.append(card.el);
    });
    if (view.done && !wasDone) {
      const c = view.counts || {};
      announce(`${c.succeeded || 0} of ${view.total} photos restored${c.failed ? `, ${c.failed} failed` : ""}.`);
      store.save();
    }
    this.render();
    updateDownloadAll();
  }

  dismiss(card) {
    if (card.rejectedKey) this.dismissed.add(card.rejectedKey);
    store.save();
  }

  detach(card) {
    const index = this.cards.indexOf(card);
    if (index >= 0) this.cards.splice(index, 1);
    if (card.id) this.byId.delete(card.id);
    if (!this.cards.length && !this.removed && this.id) {
      // The last photo of the batch went: the batch itself goes too.
      forget(`/api/batches/${this.id}`);
      this.destroy();
    } else {
      this.render();
    }
  }

  async onRemove() {
    if (!this.id) {
      if (this.abortUpload) this.abortUpload();
      clearTimeout(this.timer);
      this.destroy(true);
      return;
    }
    await this.confirmThenDelete({
      ask: true,
      prompt: "Delete all for good?",
      label: "Confirm: delete every photo of this group from the server",
      warning: "Press again to delete every photo of this group and its results from the server.",
      url: `/api/batches/${this.id}`,
      done: "The photos were deleted.",
    });
  }

  destroy(moveFocus = false) {
    this.removed = true;
    clearTimeout(this.timer);
    clearTimeout(this.confirmTimer);
    for (const card of this.cards) { card.removed = true; clearTimeout(card.timer); }
    const index = state.items.indexOf(this);
    if (index >= 0) state.items.splice(index, 1);
    if (moveFocus) {
      const next = state.items[index] || state.items[index - 1];
      (next ? next.q(".job-name") : $("#jobs-heading")).focus();
    }
    this.el.remove();
    store.save();
    updateEmpty();
    updateDownloadAll();
  }

  // -- rendering ---------------------------------------------------------------------------

  render() {
    const status = this.status;
    const r = this.record;
    this.el.dataset.status = status;
    const count = r ? r.total + (r.rejected || []).length : this.files ? this.files.length : this.cards.length;
    this.q(".job-name").textContent = `${count} photos`;
    const meta = [];
    const c = (r && r.counts) || {};
    if (r) {
      if (c.succeeded) meta.push(`${c.succeeded} restored`);
      if (c.running) meta.push(`${c.running} restoring`);
      if (c.queued) meta.push(`${c.queued} waiting`);
      if (c.failed) meta.push(`${c.failed} failed`);
      if ((r.rejected || []).length) meta.push(`${r.rejected.length} not accepted`);
    }
    const summary = optionSummary(this.options || (this.cards.find((card) => card.record && card.record.options) || {}).record?.options);
    if (summary) meta.push(summary);
    this.q(".job-meta").textContent = meta.join(" · ");
    this.showPill(status);

    const block = this.q(".progress-block");
    block.hidden = !ACTIVE.has(status);
    if (!block.hidden) {
      let fraction = 0;
      let text = "Checking status…";
      if (status === "uploading") {
        fraction = this.uploadProgress * 0.999;
        text = this.uploadProgress >= 1 ? "Checking the photos…" : `Uploading ${count} photos… ${Math.round(this.uploadProgress * 100)}%`;
      } else if (status === "waiting") {
        text = this.waitingText();
      } else if (r) {
        fraction = r.progress || 0;
        const finished = (c.succeeded || 0) + (c.failed || 0) + (c.cancelled || 0);
        text = `${finished} of ${r.total} finished`;
      }
      if (this.pollNote) text = this.pollNote;
      this.showProgress(fraction, text, `Progress of ${count} photos`, status === "waiting" || status === "loading");
      const since = r && Date.parse(r.created_at);
      this.q(".elapsed").textContent = since ? clock((serverNow() - since) / 1000) : "";
    }
    this.showError(status === "rejected" ? this.error : null);

    const zip = this.q(".zip");
    const zipReady = r && r.done && c.succeeded > 0 && r.links && r.links.zip;
    zip.hidden = !zipReady;
    if (zipReady) {
      zip.href = apiUrl(r.links.zip);
      zip.setAttribute("download", `restored-${this.id.slice(0, 8)}.zip`);
      zip.textContent = `Download all ${c.succeeded} (zip)`;
    }
    this.q(".retry").hidden = !(status === "rejected" && this.files && RETRYABLE.has(this.error.code));
    const label = !this.id ? (status === "rejected" ? "Dismiss" : "Cancel") : this.terminal ? "Delete all" : "Cancel all";
    this.labelRemove(label, `${label}: ${count} photos`);
    const expiry = this.q(".expiry");
    const expires = r && r.expires_at ? Date.parse(r.expires_at) : NaN;
    expiry.textContent = Number.isFinite(expires) && r.done ? `Kept for ${timeLeft(expires - serverNow())}` : "";
  }
}

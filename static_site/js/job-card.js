/* A photo's card, from upload to download. A card on its own polls its job; a card inside a group
 * (batch-group.js) is compact, is updated from the group's summary, and opens its comparison only
 * on request (a group may hold dozens of photos). */

import { apiUrl, fieldsForm, forget, jobForm, localTime, postForm, serverNow, TERMINAL } from "./api.js";
import { ACTIVE, Card, RETRYABLE } from "./card.js";
import { $, announce, h, nextId } from "./dom.js";
import { explain } from "./errors.js";
import { clamp, clock, duration, megabytes, ordinal, timeLeft } from "./format.js";
import { addItems, updateDownloadAll, updateEmpty } from "./job-list.js";
import { optionSummary, readOptions, submissionFields } from "./options-form.js";
import { showStandinBanner } from "./service-status.js";
import { state, store } from "./store.js";
import { uploadQueue } from "./upload-queue.js";
import { FaceChooser } from "./face-chooser.js";
import { Viewer } from "./viewer.js";

// Shown where a photo has no picture to show (not accepted, or gone from the server).
const NO_THUMB = `data:image/svg+xml,${encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48"><rect width="48" height="48" fill="#e8eaf0"/>' +
  '<g fill="none" stroke="#8a93a3" stroke-width="2.5" stroke-linejoin="round"><rect x="11" y="14" width="26" height="20" rx="3"/>' +
  '<path d="M13 31l7-6 5 4 4-3 6 5"/></g><circle cx="19" cy="21" r="2.5" fill="#8a93a3"/></svg>')}`;

export class JobCard extends Card {
  constructor({ file = null, filename, options = null, record = null, id = null, batch = null }) {
    super({ template: "#job-template", root: ".job", labelled: "article", titlePrefix: "job-title" });
    this.kind = "job";
    this.file = file;
    this.filename = filename || (file && file.name) || "photo";
    this.options = options;
    this.fields = options ? submissionFields(options) : {};
    this.record = record;
    this.full = !!record; // a whole JobView (a batch summary only carries part of it)
    this.id = id || (record && record.id) || null;
    this.batch = batch;
    this.localStatus = null; // uploading | waiting | rejected: not (yet) a job on the server
    this.expanded = !batch;
    this.thumbUrl = file && file.type.startsWith("image/") ? URL.createObjectURL(file) : null;

    this.el.classList.toggle("compact", !!batch);
    this.q(".compare").addEventListener("click", () => this.toggleCompare());
    const thumb = this.q(".thumb");
    thumb.loading = "lazy";
    thumb.addEventListener("error", () => { if (thumb.src !== NO_THUMB) thumb.src = NO_THUMB; });
    thumb.src = this.thumbUrl || (this.id ? apiUrl(`/api/jobs/${this.id}/input`) : NO_THUMB);
    if (this.id) this.el.dataset.jobId = this.id;
    this.render();
  }

  memo() {
    const r = this.record || {};
    return { id: this.id, filename: this.filename, created_at: r.created_at || null,
             expires_at: r.expires_at || this.pendingExpiry || null, status: r.status || "queued" };
  }

  get status() {
    if (this.localStatus) return this.localStatus;
    return this.record ? this.record.status : "loading";
  }

  get terminal() {
    return this.localStatus === "rejected" || (!this.localStatus && !!this.record && TERMINAL.has(this.record.status));
  }

  // -- upload ------------------------------------------------------------------------------

  upload() {
    this.localStatus = "uploading";
    this.uploadProgress = 0;
    this.render();
    uploadQueue.enqueue(this);
  }

  async runUpload() {
    if (this.removed) return;
    this.render();
    const request = postForm("/api/jobs", jobForm(this.file, this.filename, this.fields), (fraction) => {
      this.uploadProgress = fraction;
      this.render();
    });
    this.abortUpload = request.abort;
    try {
      const { body, retryAfter } = await request.promise;
      this.abortUpload = null;
      if (this.removed) {
        forget(`/api/jobs/${body.id}`);
        return;
      }
      this.localStatus = null;
      this.id = body.id;
      this.el.dataset.jobId = body.id;
      if (!this.thumbUrl || this.q(".thumb").src === NO_THUMB) this.q(".thumb").src = apiUrl(body.links.input);
      this.setRecord(body, true);
      store.save();
      this.schedulePoll(retryAfter ?? 1);
    } catch (error) {
      this.abortUpload = null;
      if (this.removed || error.code === "aborted") return;
      if (!this.retryLater(error)) this.reject(error);
    }
  }

  reject(error) {
    this.localStatus = "rejected";
    this.error = error;
    this.render();
    announce(`${this.filename}: ${explain(error).title}`);
  }

  // -- polling -----------------------------------------------------------------------------

  pollFloor() {
    // Many photos in progress share the read budget: spread their polls out.
    return state.items.filter((item) => item.kind === "job" && !item.terminal).length / 4;
  }

  statusPath() {
    return `/api/jobs/${this.id}`;
  }

  received(body, retryAfter) {
    this.setRecord(body, true);
    // A photo of a batch is followed through the batch's summary.
    if (!TERMINAL.has(body.status) && !this.batch) this.schedulePoll(retryAfter ?? 1);
  }

  /** From the batch's summary: status, stage, progress, error, links. */
  applyBatchJob(summary) {
    if (this.full && this.record.status === summary.status) return;
    const merged = { ...(this.full ? this.record : {}), ...summary };
    this.setRecord(merged, false);
    // Once it has ended, one request for the whole record (result size, faces...).
    if (TERMINAL.has(summary.status) && !this.full && !this.fetching) {
      this.fetching = true;
      this.poll().finally(() => { this.fetching = false; });
    }
  }

  setRecord(record, full) {
    const before = this.record ? this.record.status : null;
    this.record = record;
    this.full = full || this.full;
    this.filename = record.filename || this.filename;
    if (record.standin_weights) showStandinBanner();
    if (before !== record.status) {
      if (before && record.status === "succeeded" && !this.batch) announce(`${this.filename} is restored.`);
      if (before && record.status === "failed") announce(`${this.filename}: ${explain(record.error || {}).title}`);
      store.save();
    }
    this.render();
    updateDownloadAll();
  }

  /** The server no longer knows the job (expired, deleted elsewhere). */
  gone() {
    clearTimeout(this.timer);
    if (!this.batch) announce(`${this.filename} is no longer on the server and was removed from the list.`);
    this.destroy();
  }

  // -- actions -----------------------------------------------------------------------------

  toggleCompare() {
    this.expanded = !this.expanded;
    this.render();
    if (this.expanded && this.result) this.result.handle.focus({ preventScroll: true });
  }

  async onRemove() {
    if (!this.id || this.localStatus) {
      // Not on the server: cancel the upload or dismiss the message.
      if (this.abortUpload) this.abortUpload();
      uploadQueue.drop(this);
      if (this.batch) this.batch.dismiss(this);
      this.destroy(true);
      return;
    }
    // Deleting a finished result is for good: ask once, in place.
    await this.confirmThenDelete({
      ask: Boolean(this.record && this.record.status === "succeeded"),
      prompt: "Delete for good?",
      label: `Confirm: delete ${this.filename} from the server`,
      warning: "Press again to delete the photo and its result from the server.",
      url: `/api/jobs/${this.id}`,
      done: `${this.filename} was deleted.`,
    });
  }

  async retry() {
    const previous = this.id;
    let file = this.file;
    if (!file && previous) {
      // After a reload (or in a batch) the file is not in memory, but the server still has the input.
      try {
        const response = await fetch(apiUrl(`/api/jobs/${previous}/input`));
        if (!response.ok) throw new Error(String(response.status));
        file = new File([await response.blob()], `${this.filename}.png`, { type: "image/png" });
      } catch (_) {
        this.pollNote = "The original photo is no longer on the server; add it again.";
        this.render();
        return;
      }
    }
    if (!file) return;
    if (this.batch) {
      // Tried again on its own, as a single photo above the list.
      this.batch.detach(this);
      this.batch = null;
      this.expanded = true;
      this.el.classList.remove("compact");
      addItems([this]);
    }
    // Retried with the options as they are now (they may have been changed to fix the problem).
    this.file = file;
    this.options = readOptions();
    this.fields = submissionFields(this.options);
    this.id = null;
    this.record = null;
    this.full = false;
    this.error = null;
    this.pollNote = "";
    this.uploadAttempts = 0;
    this.result = null;
    this.q(".result").replaceChildren();
    delete this.el.dataset.jobId;
    store.save();
    if (previous) forget(`/api/jobs/${previous}`);
    this.upload();
  }

  destroy(moveFocus = false) {
    this.removed = true;
    clearTimeout(this.timer);
    clearTimeout(this.confirmTimer);
    const siblings = this.batch ? this.batch.cards : state.items;
    const index = siblings.indexOf(this);
    if (this.batch) this.batch.detach(this);
    else if (index >= 0) state.items.splice(index, 1);
    if (moveFocus) {
      const next = siblings[index] || siblings[index - 1];
      (next ? next.q(".job-name") : this.batch ? this.batch.q(".job-name") : $("#jobs-heading")).focus();
    }
    this.el.remove();
    if (this.thumbUrl) URL.revokeObjectURL(this.thumbUrl);
    store.save();
    updateEmpty();
    updateDownloadAll();
  }

  // -- rendering ---------------------------------------------------------------------------

  render() {
    const r = this.record;
    const status = this.status;
    this.el.dataset.status = status;
    this.q(".job-name").textContent = this.filename;

    const meta = [];
    if (r && r.input) meta.push(`${r.input.width}\u00a0×\u00a0${r.input.height} ${r.input.format}`);
    else if (this.file) meta.push(megabytes(this.file.size));
    const summary = this.batch ? "" : optionSummary((r && r.options) || this.options);
    if (summary && status !== "rejected") meta.push(summary);
    this.q(".job-meta").textContent = meta.join(" · ");

    this.showPill(status);

    this.renderProgress(status);
    this.renderError(status);
    this.renderActions(status);
    const showResult = status === "succeeded" && this.full && this.expanded;
    if (showResult && !this.result) {
      if (this.isDetection) this.renderChooser();
      else this.renderResult();
    }
    this.q(".result").hidden = !showResult;
  }

  renderProgress(status) {
    const block = this.q(".progress-block");
    block.hidden = !ACTIVE.has(status);
    if (block.hidden) return;
    const r = this.record;
    let fraction = 0;
    let stage = "";
    if (status === "uploading") {
      fraction = this.uploadProgress * 0.999;
      stage = this.uploadProgress >= 1 ? "Checking the photo…" : `Uploading… ${Math.round(this.uploadProgress * 100)}%`;
    } else if (status === "waiting") {
      stage = this.waitingText();
    } else if (status === "loading") {
      stage = "Checking status…";
    } else if (status === "queued") {
      const position = r.queue_position;
      stage = position === 1 ? "Waiting — next in line" : position ? `Waiting — ${ordinal(position)} in line` : "Waiting in line";
    } else if (status === "running") {
      fraction = r.progress || 0;
      const text = r.stage && r.stage !== "running" ? r.stage : "starting";
      stage = text.charAt(0).toUpperCase() + text.slice(1);
    }
    if (this.pollNote) stage = this.pollNote;
    this.showProgress(fraction, stage, `Progress of ${this.filename}`,
      status === "queued" || status === "waiting" || status === "loading");
    this.renderElapsed();
  }

  renderElapsed() {
    const r = this.record;
    const el = this.q(".elapsed");
    if (!r || this.localStatus || TERMINAL.has(r.status) || !r.created_at) {
      el.textContent = "";
      return;
    }
    const since = Date.parse(r.status === "running" && r.started_at ? r.started_at : r.created_at);
    el.textContent = Number.isFinite(since) ? clock((serverNow() - since) / 1000) : "";
    el.setAttribute("aria-label", r.status === "running" ? "time running" : "time waiting");
  }

  renderError(status) {
    let error = null;
    if (status === "rejected") error = this.error;
    else if (status === "failed") error = (this.record && this.record.error) || { code: "failed", message: "" };
    else if (status === "cancelled") error = { code: "cancelled", message: "" };
    this.showError(error);
  }

  renderActions(status) {
    const r = this.record;
    const download = this.q(".download");
    const retry = this.q(".retry");
    const remove = this.q(".remove");
    const compare = this.q(".compare");
    const done = status === "succeeded" && r && r.links && r.links.result;
    download.hidden = !done;
    if (done) {
      const fmt = (r.result && r.result.format) || (r.options && r.options.output_format) || "png";
      download.href = `${apiUrl(r.links.result)}?download=true`;
      download.setAttribute("download", `${this.filename}-restored.${fmt === "jpeg" ? "jpg" : fmt}`);
      download.setAttribute("aria-label", `Download restored ${this.filename}`);
    }
    compare.hidden = !(this.batch && done && this.full);
    compare.setAttribute("aria-expanded", String(this.expanded));
    compare.textContent = this.expanded ? "Hide comparison" : "Compare";
    compare.setAttribute("aria-label", `${compare.textContent} for ${this.filename}`);
    const retryable = status === "failed" || status === "cancelled" ||
      (status === "rejected" && this.error && (RETRYABLE.has(this.error.code) || this.error.code === "crop_outside_image"));
    retry.hidden = !retryable || (!this.file && !this.id);
    retry.setAttribute("aria-label", `Try ${this.filename} again`);
    remove.hidden = status === "loading";
    const local = !this.id || this.localStatus;
    const label = local ? (status === "rejected" ? "Dismiss" : "Cancel") : TERMINAL.has(status) ? "Delete" : "Cancel";
    this.labelRemove(label, `${label} ${this.filename}`);
    const expiry = this.q(".expiry");
    const expires = r && r.expires_at ? Date.parse(r.expires_at) : NaN;
    if (!this.batch && Number.isFinite(expires) && status === "succeeded") {
      expiry.textContent = `Kept for ${timeLeft(expires - serverNow())}`;
      expiry.title = `Deleted from the server automatically at ${new Date(localTime(expires)).toLocaleString()}`;
    } else {
      expiry.textContent = "";
    }
  }

  /** A finished detection (detect_only): faces to choose, no image yet. */
  get isDetection() {
    const r = this.record;
    return !!(r && r.status === "succeeded" && r.links && r.links.restore && !r.links.result);
  }

  renderChooser() {
    const r = this.record;
    this.result = new FaceChooser({
      image: apiUrl(r.links.input), width: r.input.width, height: r.input.height, faces: r.faces || [],
      name: this.filename, onRestore: (indices) => this.restoreChosen(indices),
    });
    this.q(".result").replaceChildren(this.result.el);
  }

  /** Restore the chosen faces (a new job on the server, the same photo): this card follows it. */
  async restoreChosen(indices) {
    const options = { ...readOptions(), detect_only: false };
    const fields = { ...submissionFields(options), faces: indices.join(",") };
    this.result.restore.disabled = true;
    try {
      const { body, retryAfter } = await postForm(`/api/jobs/${this.id}/restore`, fieldsForm(fields)).promise;
      this.id = body.id;
      this.el.dataset.jobId = body.id;
      this.result = null;
      this.q(".result").replaceChildren();
      this.full = false;
      this.setRecord(body, true);
      store.save();
      this.schedulePoll(retryAfter ?? 1);
      announce(`Restoring ${indices.length === 1 ? "1 face" : `${indices.length} faces`} of ${this.filename}.`);
    } catch (error) {
      this.result.restore.disabled = false;
      this.error = error;
      this.showError(error);
    }
  }

  renderResult() {
    const r = this.record;
    const container = this.q(".result");
    const out = r.result || r.input;
    const resultLabel = r.result ? `${r.result.width}\u00a0×\u00a0${r.result.height} ${r.result.format.toUpperCase()}` : "";
    // The slider compares the result with what the engine restored (the input after any crop or
    // rotation), so the two always line up.
    this.result = new Viewer({
      before: apiUrl(r.links.before || r.links.input), after: apiUrl(r.links.result),
      width: out.width, height: out.height, resultLabel, name: this.filename,
    });
    // The restored pixels' boxes (the photo's, framed as it was restored), scaled up as the result was.
    const scale = (r.options && r.options.upscale) || 1;
    const focusOf = ({ box, restored_box: restored }) => {
      const [x0, y0, x1, y1] = restored || box;
      return {
        x: clamp(((x0 + x1) / 2) * scale / out.width, 0, 1), y: clamp(((y0 + y1) / 2) * scale / out.height, 0, 1),
      };
    };
    const faces = (r.faces || []).filter((f) => f.before && f.after);
    if (faces.length) this.result.faceFocus = focusOf(faces[0]);

    const facts = [];
    const n = r.face_count;
    if (n !== null && n !== undefined) facts.push(n === 0 ? "No faces found" : n === 1 ? "1 face restored" : `${n} faces restored`);
    if (resultLabel) facts.push(resultLabel);
    if (r.started_at && r.finished_at) facts.push(`took ${duration((Date.parse(r.finished_at) - Date.parse(r.started_at)) / 1000)}`);
    const summary = h("p", { class: "result-facts" }, facts.join(" · "));
    if (r.standin_weights) summary.prepend(h("span", { class: "chip chip-warn", title: "Stand-in model weights: the restored faces are meaningless" }, "Demo output"), " ");

    const side = h("div", { class: "result-side" }, summary);
    if (r.preprocessing && r.preprocessing.length) {
      const steps = r.preprocessing.join(", ");
      side.append(h("p", { class: "result-facts" }, `Before restoring: ${steps}.`));
    }
    if (n === 0) {
      side.append(h("p", { class: "note" },
        "No face was detected, so the photo was only enlarged. If it does show a face, try a larger or sharper copy, " +
        "or switch off “Only the face nearest the centre” and “Photo is already a cropped, aligned face”."));
    }
    if (faces.length) side.append(this.renderFaces(faces, focusOf));
    container.replaceChildren(this.result.el, side);
  }

  renderFaces(faces, focusOf) {
    const headingId = nextId("faces");
    const list = h("ul", { class: "face-list" });
    for (const face of faces) {
      const number = face.index + 1;
      list.append(h("li", { class: "face" },
        h("div", { class: "face-pair" },
          h("figure", {}, h("img", { src: apiUrl(face.before), alt: `Face ${number} before`, decoding: "async" }), h("figcaption", {}, "Before")),
          h("figure", {}, h("img", { src: apiUrl(face.after), alt: `Face ${number} restored`, decoding: "async" }), h("figcaption", {}, "After"))),
        h("button", { type: "button", class: "btn-text", onclick: () => this.result.showDetail(focusOf(face)),
          "aria-label": `Zoom the comparison to face ${number}` }, `Face ${number} — zoom in`)));
    }
    return h("section", { class: "faces", "aria-labelledby": headingId },
      h("h4", { id: headingId }, faces.length === 1 ? "The face, up close" : `${faces.length} faces, up close`), list);
  }
}

/* Face restoration page: upload, follow, compare, download. Vanilla JS, no build step.
 *
 * Works against the API in processing/api.py (same origin by default; config.js may point elsewhere).
 * No inline scripts or styles anywhere, so the strict Content-Security-Policy the API sends holds:
 * styles are changed only through the CSSOM (element.style), which CSP allows.
 */
"use strict";

(() => {
  const API = String(window.FACE_API_BASE || "").replace(/\/+$/, "");
  const JOBS_KEY = "face-restore.jobs.v1";
  const OPTIONS_KEY = "face-restore.options.v1";
  const MAX_PARALLEL_UPLOADS = 2;
  const MAX_UPLOAD_RETRIES = 6;
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  const $ = (selector, root = document) => root.querySelector(selector);

  /** Create an element: h("button", {class: "btn", type: "button", onclick: fn}, "text", child...). */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const apiUrl = (path) => (/^https?:\/\//.test(path) ? path : API + path);
  const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));
  let uid = 0;
  const nextId = (prefix) => `${prefix}-${++uid}`;

  function announce(message) {
    const el = $("#announcer");
    el.textContent = "";
    // A fresh text node after a tick makes screen readers speak repeated messages too.
    setTimeout(() => { el.textContent = message; }, 50);
  }

  function megabytes(bytes) {
    const mb = bytes / (1024 * 1024);
    if (mb < 0.1) return `${Math.max(1, Math.round(bytes / 1024))}\u00a0KB`;
    return `${mb >= 10 ? Math.round(mb) : mb.toFixed(1)}\u00a0MB`;
  }

  function ordinal(n) {
    const s = ["th", "st", "nd", "rd"];
    const v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const m = Math.floor(seconds / 60);
    const s = String(seconds % 60).padStart(2, "0");
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function duration(seconds) {
    // Non-breaking spaces keep a number with its unit when lines wrap.
    if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)}\u00a0s`;
    const m = Math.floor(seconds / 60);
    return `${m}\u00a0min ${Math.round(seconds % 60)}\u00a0s`;
  }

  function timeLeft(ms) {
    const hours = ms / 3600e3;
    if (hours >= 1.5) return `${Math.round(hours)} hours`;
    const minutes = Math.max(1, Math.round(ms / 60e3));
    return minutes === 1 ? "1 minute" : `${minutes} minutes`;
  }

  /** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
  function retryAfterSeconds(value) {
    if (!value) return null;
    const n = Number(value);
    if (Number.isFinite(n)) return Math.max(0, n);
    const when = Date.parse(value);
    return Number.isFinite(when) ? Math.max(0, (when - Date.now()) / 1000) : null;
  }

  // Server clock minus ours, from the Date header when it is readable (same origin).
  let clockSkew = 0;
  function noteServerDate(dateHeader) {
    const when = Date.parse(dateHeader || "");
    if (Number.isFinite(when)) clockSkew = when - Date.now();
  }
  const serverNow = () => Date.now() + clockSkew;

  // ---------------------------------------------------------------------------------------------
  // Errors in plain words

  class ApiError extends Error {
    constructor(status, code, message, { retryAfter = null, fields = null } = {}) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
      this.fields = fields;
    }
  }

  function errorFromResponse(status, body, retryAfter) {
    const err = (body && body.error) || {};
    const code = err.code || (status === 429 ? "rate_limited" : status >= 500 ? "server_error" : "http_error");
    return new ApiError(status, code, err.message || `the service answered ${status}`, { retryAfter, fields: err.fields });
  }

  const sentence = (text) => (text ? text.charAt(0).toUpperCase() + text.slice(1).replace(/\.?$/, ".") : "");

  /** {title, next, auto} for an error: what happened, and what the person can do about it. */
  function explain(error) {
    const code = error.code || "";
    const detail = sentence(error.message);
    const limit = state.info ? megabytes(state.info.max_upload_bytes) : "the limit";
    switch (code) {
      case "file_too_large":
        return { title: "This file is too big.", next: `${detail} Photos up to ${limit} are accepted: export a smaller copy (a high-quality JPEG is usually plenty) and add it again.` };
      case "too_many_pixels":
        return { title: "This photo has too many pixels.", next: `${detail} Resize it (or crop it around the faces) and add it again.` };
      case "not_an_image":
        return { title: "This file isn’t a photo we can read.", next: "Choose a JPEG, PNG or WebP image. If it opens on your device, save a copy in one of those formats and add that." };
      case "empty_file":
      case "corrupt_image":
      case "bad_dimensions":
        return { title: "This file isn’t a photo we can read.", next: `${detail} If it opens on your device, save a fresh copy as JPEG, PNG or WebP and add that.` };
      case "unsupported_format":
        return { title: "This image format isn’t supported.", next: `${detail.replace(/; send JPEG, PNG or WebP\.$/, ".")} Save it as JPEG, PNG or WebP (phones can export HEIC photos as JPEG) and add it again.` };
      case "invalid_request": {
        const fields = (error.fields || []).map((f) => `${optionLabel(f.field)}: ${f.message}`).join("; ");
        return { title: "Some options weren’t accepted.", next: `${fields || detail} Adjust the options above and press “Try again”.` };
      }
      case "crop_outside_image":
        return { title: "The crop doesn’t fit this photo.", next: `${detail} Change or clear “Crop” in the options and press “Try again”.` };
      case "too_many_files":
        return { title: "Too many photos at once.", next: `${detail} Add them in smaller groups.` };
      case "no_images":
        return { title: "None of these files is a photo we can read.", next: "Choose JPEG, PNG or WebP images (or a zip of them) and add them again." };
      case "bad_zip":
        return { title: "This zip file can’t be used.", next: `${detail} Add the photos themselves, or a smaller zip.` };
      case "auth_required":
      case "unauthorized":
        return { title: "Sign-in needed.", next: "This service only accepts photos from signed-in users or with an API key. Sign in, then press “Try again”." };
      case "internal_error":
        return { title: "Something went wrong on our side.", next: "It has been logged. Press “Try again” in a moment." };
      case "batch_not_found":
        return { title: "These photos are no longer on the server.", next: "They expired or were deleted. Add them again if you still need them." };
      case "rate_limited":
        return { title: "You’re adding photos faster than the service allows.", next: "Nothing is lost: it will be sent again automatically.", auto: true };
      case "busy":
        return { title: "The service is busy right now.", next: "Nothing is lost: it will be sent again automatically.", auto: true };
      case "storage_unavailable":
      case "server_error":
        return { title: "The service is having a hiccup.", next: "It will be tried again automatically.", auto: true };
      case "network":
        return { title: "Couldn’t reach the service.", next: "Check your internet connection; it will be tried again automatically.", auto: true };
      case "input_missing":
        return { title: "The uploaded photo is no longer on the server.", next: "It expired or was deleted. Add the photo again." };
      case "job_not_found":
        return { title: "This photo is no longer on the server.", next: "It expired or was deleted. Add the photo again if you still need it." };
      case "processing_failed":
        return { title: "Restoring this photo failed.", next: `${detail} Press “Try again”; if it keeps failing, try a smaller photo or other options.` };
      case "cancelled":
        return { title: "This job was cancelled.", next: "Press “Try again” to run it again." };
      default:
        return { title: "Something went wrong.", next: `${detail} Press “Try again”; if it keeps happening, try again later.` };
    }
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP

  async function apiFetch(path, init = {}) {
    let response;
    try {
      response = await fetch(apiUrl(path), { cache: "no-store", ...init });
    } catch (networkError) {
      throw new ApiError(0, "network", "the service could not be reached");
    }
    noteServerDate(response.headers.get("Date"));
    const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
    if (response.status === 204) return { status: 204, body: null, retryAfter };
    let body = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try { body = await response.json(); } catch (_) { body = null; }
    }
    if (!response.ok) throw errorFromResponse(response.status, body, retryAfter);
    return { status: response.status, body, retryAfter };
  }

  /** POST a multipart form with upload progress (fetch cannot report it). Resolves to {body, retryAfter}. */
  function postForm(path, form, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open("POST", apiUrl(path));
      xhr.responseType = "text";
      xhr.timeout = 10 * 60 * 1000;
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        noteServerDate(xhr.getResponseHeader("Date"));
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
        const retryAfter = retryAfterSeconds(xhr.getResponseHeader("Retry-After"));
        if (xhr.status >= 200 && xhr.status < 300 && body) resolve({ body, retryAfter });
        else reject(errorFromResponse(xhr.status, body, retryAfter));
      });
      const failed = () => reject(new ApiError(0, "network", "the upload did not reach the service"));
      xhr.addEventListener("error", failed);
      xhr.addEventListener("timeout", failed);
      xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "upload cancelled")));
      xhr.send(form);
    });
    return { promise, abort: () => xhr.abort() };
  }

  function jobForm(file, filename, fields) {
    const form = new FormData();
    form.append("file", file, filename);
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    return form;
  }

  function batchForm(files, fields) {
    const form = new FormData();
    for (const { file, name } of files) form.append("files", file, name);
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    return form;
  }

  // ---------------------------------------------------------------------------------------------
  // Recent jobs and batches, remembered in localStorage until they expire on the server

  const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;
  const store = {
    load() {
      try {
        const list = JSON.parse(localStorage.getItem(JOBS_KEY) || "[]");
        const now = serverNow();
        return Array.isArray(list)
          ? list.filter((r) => r && (SAFE_ID.test(r.id || "") || SAFE_ID.test(r.batch || "")) &&
              (!r.expires_at || Date.parse(r.expires_at) > now))
          : [];
      } catch (_) {
        return [];
      }
    },
    save() {
      const records = state.items.filter((item) => item.id).map((item) => item.memo());
      try { localStorage.setItem(JOBS_KEY, JSON.stringify(records)); } catch (_) { /* private mode, quota */ }
    },
  };

  /** After a failed poll, back off: the server's Retry-After if it sent one, else 2, 4, 8 ... 30 s
   * (with jitter, so many cards do not retry in step), and say when the next try is. */
  function backOff(item, error) {
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
  async function deleteWithConfirmation(item, button, { ask, prompt, label, warning, url, done }) {
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

  // ---------------------------------------------------------------------------------------------
  // Options, built from the API's own schema (GET /api/info)

  // Friendlier labels and controls for the options we know; anything new in the schema still
  // gets a generic control with the schema's own description.
  const OPTION_UI = {
    model: { label: "Model", main: true, values: { "1.4": "GFPGAN 1.4", "1.3": "GFPGAN 1.3" } },
    upscale: { label: "Output size", main: true, control: "segmented", values: { 1: "1×", 2: "2×", 3: "3×", 4: "4×" } },
    strength: { label: "Strength", main: true, control: "range", step: 0.05, show: (v) => `${Math.round(v * 100)}%` },
    only_center_face: { label: "Only the face nearest the centre" },
    aligned: { label: "Photo is already a cropped, aligned face" },
    blend_mask: {
      label: "Blending", values: { parse: "Face outline", box: "Soft square (faster)" },
      help: "How restored faces are blended back: along the face outline, or a feathered square that skips the face-parsing network.",
    },
    background: {
      label: "Background", values: { lanczos: "Smooth enlargement", realesrgan: "Real-ESRGAN (slow)" },
      help: "How the rest of the photo is enlarged. Real-ESRGAN is sharper but takes about half a minute per megapixel.",
    },
    output_format: { label: "File format", values: { png: "PNG", jpeg: "JPEG", webp: "WebP" } },
    quality: { label: "Quality", control: "range", step: 1, show: (v) => `${v}`, when: { output_format: ["jpeg", "webp"] } },
    auto_orient: { label: "Turn upright automatically" },
    rotate: { label: "Rotate", values: { 0: "0°", 90: "90°", 180: "180°", 270: "270°" } },
    max_side: { label: "Shrink to at most (pixels)", placeholder: "no limit" },
    denoise: { label: "Reduce noise" },
    auto_contrast: { label: "Fix faded contrast" },
    white_balance: { label: "Fix colour cast" },
    crop: { label: "Crop", placeholder: "x, y, width, height" },
  };
  const ORDER = Object.keys(OPTION_UI);

  const optionLabel = (name) => (OPTION_UI[name] && OPTION_UI[name].label) ||
    (state.schema[name] && state.schema[name].title) || name;

  /** The schema of a field without its nullable wrapper: {type, enum, minimum, maximum, ...}. */
  function baseSchema(prop) {
    if (prop.anyOf) {
      const inner = prop.anyOf.find((p) => p.type !== "null") || {};
      return { ...inner, nullable: prop.anyOf.some((p) => p.type === "null"), description: prop.description, default: prop.default, title: prop.title };
    }
    return { ...prop, nullable: false };
  }

  function validValue(schema, value) {
    if (value === null || value === undefined || value === "") return schema.nullable || schema.type === "string";
    if (schema.enum) return schema.enum.map(String).includes(String(value));
    if (schema.type === "boolean") return typeof value === "boolean";
    if (schema.type === "integer" || schema.type === "number") {
      const n = Number(value);
      return Number.isFinite(n) && (schema.type === "number" || Number.isInteger(n)) &&
        (schema.minimum === undefined || n >= schema.minimum) && (schema.maximum === undefined || n <= schema.maximum);
    }
    return typeof value === "string";
  }

  function buildOptionsForm(schemaProps, availableModels) {
    state.schema = {};
    for (const [name, prop] of Object.entries(schemaProps)) state.schema[name] = baseSchema(prop);
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(OPTIONS_KEY) || "{}") || {}; } catch (_) { saved = {}; }

    const names = Object.keys(state.schema).sort((a, b) => {
      const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
      return (ia < 0 ? 999 : ia) - (ib < 0 ? 999 : ib);
    });
    const main = h("div", { class: "options-main" });
    const moreBody = h("div", { class: "options-more-body" });
    const more = h("details", { class: "options-more" },
      h("summary", {}, "More options"), moreBody);

    for (const name of names) {
      const schema = state.schema[name];
      const ui = OPTION_UI[name] || {};
      let value = name in saved && validValue(schema, saved[name]) ? saved[name] : schema.default;
      if (name === "model" && availableModels.length && !availableModels.includes(String(value))) value = availableModels[0];
      const field = buildField(name, schema, ui, value, name === "model" ? availableModels : null);
      (ui.main ? main : moreBody).append(field);
    }
    const container = $("#options-fields");
    container.replaceChildren(main, more);
    if (Object.keys(saved).some((k) => state.schema[k] && saved[k] !== state.schema[k].default)) more.open = !!moreBody.querySelector(".changed");
    refreshOptionDependencies();
  }

  function buildField(name, schema, ui, value, availableModels) {
    const id = `opt-${name}`;
    const helpId = `${id}-help`;
    const help = ui.help || schema.description || "";
    const label = ui.label || schema.title || name;
    const wrap = h("div", { class: "field", "data-option": name });
    const helpEl = help ? h("p", { class: "field-help", id: helpId }, help) : null;
    const values = schema.enum || (ui.values && schema.type === "integer" ? Object.keys(ui.values).map(Number) : null);

    if (values && (schema.enum || ui.control === "segmented")) {
      const fieldset = h("fieldset", { class: "segmented-field", "aria-describedby": helpEl ? helpId : null },
        h("legend", {}, label));
      const group = h("div", { class: "segmented" });
      for (const option of values) {
        const optionId = `${id}-${String(option).replace(/\W/g, "_")}`;
        const disabled = availableModels && availableModels.length && !availableModels.includes(String(option));
        group.append(
          h("input", { type: "radio", name, id: optionId, value: String(option), checked: String(option) === String(value), disabled }),
          h("label", { for: optionId, title: disabled ? "These weights are not installed on the server" : null },
            (ui.values && ui.values[option]) || String(option)),
        );
      }
      fieldset.append(group);
      if (helpEl) fieldset.append(helpEl);
      wrap.append(fieldset);
    } else if (schema.type === "boolean") {
      wrap.classList.add("field-switch");
      wrap.append(
        h("input", { type: "checkbox", role: "switch", id, name, checked: !!value, "aria-describedby": helpEl ? helpId : null }),
        h("label", { for: id }, label),
      );
      if (helpEl) wrap.append(helpEl);
    } else if (ui.control === "range" && schema.minimum !== undefined && schema.maximum !== undefined) {
      const output = h("output", { for: id, id: `${id}-out` }, ui.show ? ui.show(value) : String(value));
      const input = h("input", {
        type: "range", id, name, min: schema.minimum, max: schema.maximum,
        step: ui.step || (schema.type === "integer" ? 1 : "any"), value, "aria-describedby": helpEl ? helpId : null,
      });
      input.addEventListener("input", () => {
        output.textContent = ui.show ? ui.show(Number(input.value)) : input.value;
        input.setAttribute("aria-valuetext", output.textContent);
      });
      input.setAttribute("aria-valuetext", output.textContent);
      wrap.append(h("div", { class: "field-row" }, h("label", { for: id }, label), output), input);
      if (helpEl) wrap.append(helpEl);
    } else {
      const numeric = schema.type === "integer" || schema.type === "number";
      wrap.append(
        h("label", { for: id }, label),
        h("input", {
          type: numeric ? "number" : "text", id, name, value: value === null || value === undefined ? "" : value,
          min: schema.minimum, max: schema.maximum, step: schema.type === "integer" ? 1 : numeric ? "any" : null,
          inputmode: numeric ? "numeric" : null, placeholder: ui.placeholder || null, autocomplete: "off",
          "aria-describedby": helpEl ? helpId : null,
        }),
      );
      if (helpEl) wrap.append(helpEl);
    }
    return wrap;
  }

  /** Current option values, typed per the schema. */
  function readOptions() {
    const form = $("#options-form");
    const values = {};
    for (const [name, schema] of Object.entries(state.schema)) {
      const controls = form.elements.namedItem(name);
      if (!controls) continue;
      let raw;
      if (controls instanceof RadioNodeList) raw = controls.value;
      else if (controls.type === "checkbox") raw = controls.checked;
      else raw = controls.value.trim();
      if (schema.type === "boolean") values[name] = !!raw;
      else if (raw === "" || raw === null) values[name] = null;
      else if (schema.type === "integer" || schema.type === "number") values[name] = Number(raw);
      else values[name] = raw;
    }
    return values;
  }

  /** Form fields for a submission: only what differs from the API's defaults. */
  function submissionFields(options) {
    const fields = {};
    for (const [name, value] of Object.entries(options)) {
      const schema = state.schema[name];
      if (!schema || value === null || value === "" || value === schema.default) continue;
      if (OPTION_UI[name] && OPTION_UI[name].when && !dependencyMet(OPTION_UI[name].when, options)) continue;
      fields[name] = typeof value === "boolean" ? String(value) : String(value);
    }
    return fields;
  }

  const dependencyMet = (when, options) =>
    Object.entries(when).every(([other, allowed]) => allowed.includes(String(options[other])));

  function refreshOptionDependencies() {
    const options = readOptions();
    for (const field of document.querySelectorAll("#options-fields .field")) {
      const name = field.dataset.option;
      const ui = OPTION_UI[name];
      const schema = state.schema[name];
      if (ui && ui.when) field.hidden = !dependencyMet(ui.when, options);
      field.classList.toggle("changed", options[name] !== schema.default && !(options[name] === null && schema.default === null));
    }
  }

  function saveOptions() {
    try { localStorage.setItem(OPTIONS_KEY, JSON.stringify(readOptions())); } catch (_) { /* ignore */ }
  }

  function optionSummary(options) {
    if (!options) return "";
    const parts = [];
    if (options.model) parts.push(`GFPGAN ${options.model}`);
    if (options.upscale) parts.push(`${options.upscale}×`);
    if (options.strength !== undefined && options.strength !== 1) parts.push(`strength ${Math.round(options.strength * 100)}%`);
    if (options.blend_mask === "box") parts.push("soft-square blend");
    if (options.only_center_face) parts.push("centre face only");
    if (options.aligned) parts.push("aligned face");
    if (options.output_format && options.output_format !== "png") parts.push(options.output_format.toUpperCase());
    return parts.join(" · ");
  }

  // ---------------------------------------------------------------------------------------------
  // Before/after viewer: slider (drag, keys, touch), side by side, zoom

  const ZOOMS = [1, 2, 4];

  class Viewer {
    constructor({ before, after, width, height, resultLabel, name }) {
      this.pos = 50;
      this.zoom = 1;
      this.mode = "slider";
      this.focus = { x: 0.5, y: 0.5 };
      this.faceFocus = null;
      const ratio = width && height ? width / height : 1;

      const modeGroup = h("div", { class: "seg-buttons", role: "group", "aria-label": "Comparison view" });
      this.modeButtons = {
        slider: h("button", { type: "button", "aria-pressed": "true", onclick: () => this.setMode("slider") }, "Slider"),
        sbs: h("button", { type: "button", "aria-pressed": "false", onclick: () => this.setMode("sbs") }, "Side by side"),
      };
      modeGroup.append(this.modeButtons.slider, this.modeButtons.sbs);
      const zoomGroup = h("div", { class: "seg-buttons", role: "group", "aria-label": "Zoom" });
      this.zoomButtons = ZOOMS.map((z) => h("button", {
        type: "button", "aria-pressed": String(z === 1), "data-zoom": z,
        "aria-label": z === 1 ? "Fit to frame" : `Zoom ${z} times`, onclick: () => this.setZoom(z),
      }, z === 1 ? "Fit" : `${z}×`));
      zoomGroup.append(...this.zoomButtons);
      const fullSize = h("a", { class: "btn-text full-size", href: after, target: "_blank", rel: "noopener" }, "Full size", h("span", { "aria-hidden": "true" }, " ↗"));

      this.toolbar = h("div", { class: "viewer-toolbar" }, modeGroup, zoomGroup, fullSize);

      // Slider view: the restored image on top, clipped to the right of the divider.
      const makeImage = (src, alt, cls) => h("img", { src, alt, class: cls, draggable: "false", decoding: "async" });
      this.before = makeImage(before, `Original: ${name}`, "img-before");
      this.after = makeImage(after, `Restored: ${name}`, "img-after");
      this.canvas = h("div", { class: "canvas" }, this.before, this.after);
      this.scroller = h("div", { class: "scroller", "aria-label": "Comparison image; scroll to move around when zoomed" }, this.canvas);
      this.handle = h("div", {
        class: "handle", role: "slider", tabindex: "0", "aria-label": "Before and after divider",
        "aria-orientation": "horizontal", "aria-valuemin": "0", "aria-valuemax": "100",
      }, h("span", { class: "handle-grip", "aria-hidden": "true" }));
      this.divider = h("div", { class: "divider", "aria-hidden": "true" });
      this.stage = h("div", { class: "stage slider-stage" }, this.scroller, this.divider, this.handle,
        h("span", { class: "tag tag-left", "aria-hidden": "true" }, "Before"),
        h("span", { class: "tag tag-right", "aria-hidden": "true" }, "Restored"));
      this.stage.style.setProperty("--ar", String(ratio));

      // Side-by-side view: two panes that scroll together.
      const pane = (src, alt, caption) => {
        const img = makeImage(src, alt, "img-single");
        const canvas = h("div", { class: "canvas" }, img);
        const scroller = h("div", { class: "scroller", "aria-label": `${caption} image` }, canvas);
        const stage = h("div", { class: "stage" }, scroller);
        stage.style.setProperty("--ar", String(ratio));
        return { figure: h("figure", { class: "pane" }, stage, h("figcaption", {}, caption)), scroller, canvas, stage };
      };
      this.panes = [pane(before, `Original: ${name}`, "Before"), pane(after, `Restored: ${name}`, `Restored${resultLabel ? ` · ${resultLabel}` : ""}`)];
      this.sbs = h("div", { class: "sbs", hidden: true }, ...this.panes.map((p) => p.figure));

      this.el = h("div", { class: "viewer" }, this.toolbar, this.stage, this.sbs);
      this.wire();
      this.setPos(50);
    }

    wire() {
      const stage = this.stage;
      stage.addEventListener("pointerdown", (event) => this.pointerDown(event, this.scroller, true));
      for (const pane of this.panes) pane.stage.addEventListener("pointerdown", (event) => this.pointerDown(event, pane.scroller, false));
      const move = (event) => this.pointerMove(event);
      const end = (event) => {
        if (!this.drag || this.drag.id !== event.pointerId) return;
        this.drag.target.classList.remove("panning");
        this.drag = null;
      };
      for (const el of [stage, ...this.panes.map((p) => p.stage)]) {
        el.addEventListener("pointermove", move);
        el.addEventListener("pointerup", end);
        el.addEventListener("pointercancel", end);
        el.addEventListener("lostpointercapture", end);
      }
      this.handle.addEventListener("keydown", (event) => {
        const step = event.shiftKey ? 10 : 1;
        const moves = {
          ArrowLeft: -step, ArrowDown: -step, ArrowRight: step, ArrowUp: step, PageDown: -10, PageUp: 10,
          Home: -Infinity, End: Infinity,
        };
        if (!(event.key in moves)) return;
        event.preventDefault();
        this.setPos(Math.round(this.pos) + moves[event.key]);
      });
      this.scroller.addEventListener("scroll", () => { this.rememberFocus(this.scroller); this.updateClip(); }, { passive: true });
      // Side by side, the pane the person is moving leads and the other follows. (Following every
      // scroll event both ways would let a late event from the follower drag the leader back.)
      this.panes.forEach((pane, i) => {
        const lead = () => { this.leader = pane.scroller; };
        for (const type of ["pointerdown", "wheel", "touchstart", "keydown", "focus"]) {
          pane.scroller.addEventListener(type, lead, { passive: true });
        }
        pane.scroller.addEventListener("scroll", () => {
          if (this.leader !== pane.scroller) return;
          const other = this.panes[1 - i].scroller;
          other.scrollLeft = pane.scroller.scrollLeft;
          other.scrollTop = pane.scroller.scrollTop;
          this.rememberFocus(pane.scroller);
        }, { passive: true });
      });
      if ("ResizeObserver" in window) new ResizeObserver(() => this.updateClip()).observe(this.stage);
    }

    pointerDown(event, scroller, isSlider) {
      if (event.button !== 0 || this.drag) return;
      const onHandle = isSlider && this.handle.contains(event.target);
      if (isSlider && (onHandle || this.zoom === 1)) {
        this.drag = { id: event.pointerId, kind: "slide", target: event.currentTarget };
        event.currentTarget.setPointerCapture(event.pointerId);
        if (!onHandle) this.setPosFromX(event.clientX);
        this.handle.focus({ preventScroll: true });
        event.preventDefault();
      } else if (this.zoom > 1 && event.pointerType === "mouse") {
        // Touch pans natively (the scroller is overflow: auto); a mouse drags to pan.
        this.drag = { id: event.pointerId, kind: "pan", target: event.currentTarget, scroller,
          x: event.clientX, y: event.clientY, left: scroller.scrollLeft, top: scroller.scrollTop };
        event.currentTarget.setPointerCapture(event.pointerId);
        event.currentTarget.classList.add("panning");
        event.preventDefault();
      }
    }

    pointerMove(event) {
      const drag = this.drag;
      if (!drag || drag.id !== event.pointerId) return;
      if (drag.kind === "slide") this.setPosFromX(event.clientX);
      else {
        drag.scroller.scrollLeft = drag.left - (event.clientX - drag.x);
        drag.scroller.scrollTop = drag.top - (event.clientY - drag.y);
      }
    }

    setPosFromX(clientX) {
      const rect = this.stage.getBoundingClientRect();
      if (rect.width > 0) this.setPos(((clientX - rect.left) / rect.width) * 100, true);
    }

    setPos(value, fine = false) {
      this.pos = clamp(fine ? value : Math.round(value), 0, 100);
      const rounded = Math.round(this.pos);
      this.stage.style.setProperty("--pos", `${this.pos}%`);
      this.handle.setAttribute("aria-valuenow", String(rounded));
      this.handle.setAttribute("aria-valuetext", `${rounded}%: original on the left, restored on the right`);
      this.updateClip();
    }

    updateClip() {
      const s = this.scroller;
      const width = s.scrollWidth;
      const split = width ? ((s.scrollLeft + (this.pos / 100) * s.clientWidth) / width) * 100 : this.pos;
      this.after.style.clipPath = `inset(0 0 0 ${clamp(split, 0, 100).toFixed(2)}%)`;
    }

    activeScrollers() {
      return this.mode === "slider" ? [this.scroller] : this.panes.map((p) => p.scroller);
    }

    rememberFocus(scroller) {
      if (this.zoom === 1 || !scroller.scrollWidth) return;
      this.focus = {
        x: (scroller.scrollLeft + scroller.clientWidth / 2) / scroller.scrollWidth,
        y: (scroller.scrollTop + scroller.clientHeight / 2) / scroller.scrollHeight,
      };
    }

    setMode(mode) {
      this.mode = mode;
      this.stage.hidden = mode !== "slider";
      this.sbs.hidden = mode !== "sbs";
      for (const [key, button] of Object.entries(this.modeButtons)) button.setAttribute("aria-pressed", String(key === mode));
      this.applyZoom();
    }

    /** Zoom in around `focus` (fractions of the image), by default where the view is, or the first face. */
    setZoom(zoom, focus) {
      if (focus) this.focus = focus;
      else if (this.zoom === 1 && zoom > 1) this.focus = this.faceFocus || { x: 0.5, y: 0.5 };
      this.zoom = zoom;
      for (const button of this.zoomButtons) button.setAttribute("aria-pressed", String(Number(button.dataset.zoom) === zoom));
      this.applyZoom();
    }

    applyZoom() {
      const zoom = this.zoom;
      const all = [[this.scroller, this.canvas], ...this.panes.map((p) => [p.scroller, p.canvas])];
      for (const [scroller, canvas] of all) {
        canvas.style.width = canvas.style.height = `${zoom * 100}%`;
        scroller.classList.toggle("zoomed", zoom > 1);
        if (zoom > 1) scroller.tabIndex = 0;
        else scroller.removeAttribute("tabindex");
      }
      const focus = this.focus;
      this.leader = null;
      for (const scroller of this.activeScrollers()) {
        scroller.scrollLeft = focus.x * scroller.scrollWidth - scroller.clientWidth / 2;
        scroller.scrollTop = focus.y * scroller.scrollHeight - scroller.clientHeight / 2;
      }
      this.stage.classList.toggle("is-zoomed", zoom > 1);
      this.updateClip();
    }

    showDetail(focus) {
      this.setZoom(4, focus);
      this.el.scrollIntoView({ behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth", block: "nearest" });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // A job card: one photo, from upload to download. Standalone cards poll their job; cards that
  // belong to a batch are compact, updated from the batch's summary, and open their comparison
  // on request (a batch may hold dozens of photos).

  const ACTIVE = new Set(["loading", "uploading", "waiting", "queued", "running"]);
  // Shown where a photo has no picture to show (not accepted, or gone from the server).
  const NO_THUMB = `data:image/svg+xml,${encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48"><rect width="48" height="48" fill="#e8eaf0"/>' +
    '<g fill="none" stroke="#8a93a3" stroke-width="2.5" stroke-linejoin="round"><rect x="11" y="14" width="26" height="20" rx="3"/>' +
    '<path d="M13 31l7-6 5 4 4-3 6 5"/></g><circle cx="19" cy="21" r="2.5" fill="#8a93a3"/></svg>')}`;

  class JobCard {
    constructor({ file = null, filename, options = null, record = null, id = null, batch = null }) {
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
      this.uploadProgress = 0;
      this.uploadAttempts = 0;
      this.pollErrors = 0;
      this.timer = null;
      this.pollNote = "";
      this.expanded = !batch;
      this.thumbUrl = file && file.type.startsWith("image/") ? URL.createObjectURL(file) : null;

      const fragment = $("#job-template").content.cloneNode(true);
      this.el = fragment.querySelector(".job");
      this.el.classList.toggle("compact", !!batch);
      const titleId = nextId("job-title");
      this.q = (selector) => this.el.querySelector(selector);
      this.q(".job-name").id = titleId;
      this.q(".job-name").tabIndex = -1;
      this.q("article").setAttribute("aria-labelledby", titleId);
      this.q(".remove").addEventListener("click", () => this.onRemove());
      this.q(".retry").addEventListener("click", () => this.retry());
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
      uploads.enqueue(this);
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
          apiFetch(`/api/jobs/${body.id}`, { method: "DELETE" }).catch(() => {});
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
        const how = explain(error);
        if (how.auto && this.uploadAttempts < MAX_UPLOAD_RETRIES) {
          this.uploadAttempts += 1;
          this.waitThenUpload(error.retryAfter ?? Math.min(60, 2 ** this.uploadAttempts), how);
        } else {
          this.reject(error);
        }
      }
    }

    waitThenUpload(seconds, how) {
      this.localStatus = "waiting";
      this.waitUntil = Date.now() + seconds * 1000;
      this.waitReason = how.title;
      this.render();
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.removed) this.upload();
      }, seconds * 1000);
    }

    reject(error) {
      this.localStatus = "rejected";
      this.error = error;
      this.render();
      announce(`${this.filename}: ${explain(error).title}`);
    }

    // -- polling -----------------------------------------------------------------------------

    schedulePoll(seconds) {
      clearTimeout(this.timer);
      // Many photos in progress share the read budget: spread their polls out.
      const busy = state.items.filter((item) => item.kind === "job" && !item.terminal).length;
      let delay = clamp(Math.max(seconds, busy / 4), 0.5, 60);
      if (document.hidden) delay = Math.max(delay, 5); // a background tab needs no second-by-second updates
      this.timer = setTimeout(() => this.poll(), delay * 1000);
    }

    async poll() {
      this.timer = null;
      if (this.removed || !this.id) return;
      try {
        const { body, retryAfter } = await apiFetch(`/api/jobs/${this.id}`);
        if (this.removed) return;
        this.pollErrors = 0;
        this.pollNote = "";
        this.setRecord(body, true);
        if (!TERMINAL.has(body.status) && !this.batch) this.schedulePoll(retryAfter ?? 1);
      } catch (error) {
        if (this.removed) return;
        if (error.status === 404) {
          this.gone();
          return;
        }
        backOff(this, error);
      }
    }

    pollNow() {
      if (this.timer && this.id && !this.terminal && !this.localStatus && !this.batch) {
        clearTimeout(this.timer);
        this.poll();
      }
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
      const button = this.q(".remove");
      if (!this.id || this.localStatus) {
        // Not on the server: cancel the upload or dismiss the message.
        if (this.abortUpload) this.abortUpload();
        uploads.drop(this);
        if (this.batch) this.batch.dismiss(this);
        this.destroy(true);
        return;
      }
      // Deleting a finished result is for good: ask once, in place.
      await deleteWithConfirmation(this, button, {
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
      if (previous) apiFetch(`/api/jobs/${previous}`, { method: "DELETE" }).catch(() => {});
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

      const pills = {
        loading: "Checking…", uploading: "Uploading", waiting: "Waiting", rejected: "Not accepted",
        queued: "In line", running: "Restoring", succeeded: "Done", failed: "Failed", cancelled: "Cancelled",
      };
      const pill = this.q(".pill");
      pill.textContent = pills[status] || status;
      pill.className = `pill pill-${status}`;

      this.renderProgress(status);
      this.renderError(status);
      this.renderActions(status);
      const showResult = status === "succeeded" && this.full && this.expanded;
      if (showResult && !this.result) this.renderResult();
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
        const left = Math.max(0, Math.ceil((this.waitUntil - Date.now()) / 1000));
        stage = `${this.waitReason} Sending again in ${left}\u00a0s.`;
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
      setProgress(this.el, fraction, stage, `Progress of ${this.filename}`,
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
      showError(this.el, error);
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
        (status === "rejected" && this.error && ["invalid_request", "crop_outside_image", "network", "busy",
          "rate_limited", "storage_unavailable", "server_error", "internal_error", "auth_required"].includes(this.error.code));
      retry.hidden = !retryable || (!this.file && !this.id);
      retry.setAttribute("aria-label", `Try ${this.filename} again`);
      remove.hidden = status === "loading";
      if (!this.confirming) {
        const local = !this.id || this.localStatus;
        const label = local ? (status === "rejected" ? "Dismiss" : "Cancel") : TERMINAL.has(status) ? "Delete" : "Cancel";
        remove.textContent = label;
        remove.classList.remove("btn-danger");
        remove.disabled = false;
        remove.setAttribute("aria-label", `${label} ${this.filename}`);
      }
      const expiry = this.q(".expiry");
      const expires = r && r.expires_at ? Date.parse(r.expires_at) : NaN;
      if (!this.batch && Number.isFinite(expires) && status === "succeeded") {
        expiry.textContent = `Kept for ${timeLeft(expires - serverNow())}`;
        expiry.title = `Deleted from the server automatically at ${new Date(expires - clockSkew).toLocaleString()}`;
      } else {
        expiry.textContent = "";
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
      // Face boxes are in the engine's input pixels: the result's size divided by the upscale.
      const scale = (r.options && r.options.upscale) || 1;
      const focusOf = ([x0, y0, x1, y1]) => ({
        x: clamp(((x0 + x1) / 2) * scale / out.width, 0, 1), y: clamp(((y0 + y1) / 2) * scale / out.height, 0, 1),
      });
      const faces = (r.faces || []).filter((f) => f.before && f.after);
      if (faces.length) this.result.faceFocus = focusOf(faces[0].box);

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
          h("button", { type: "button", class: "btn-text", onclick: () => this.result.showDetail(focusOf(face.box)),
            "aria-label": `Zoom the comparison to face ${number}` }, `Face ${number} — zoom in`)));
      }
      return h("section", { class: "faces", "aria-labelledby": headingId },
        h("h4", { id: headingId }, faces.length === 1 ? "The face, up close" : `${faces.length} faces, up close`), list);
    }
  }

  function setProgress(root, fraction, text, label, indeterminate) {
    const bar = root.querySelector(".progress");
    const percent = Math.round(fraction * 100);
    bar.classList.toggle("indeterminate", indeterminate);
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-label", label);
    bar.setAttribute("aria-valuetext", indeterminate ? text : `${text} ${percent}%`);
    root.querySelector(".progress-fill").style.width = `${percent}%`;
    root.querySelector(".stage-text").textContent = text;
  }

  function showError(root, error) {
    const box = root.querySelector(".job-error");
    box.hidden = !error;
    if (!error) return;
    const how = explain(error);
    box.querySelector(".job-error-title").textContent = how.title;
    box.querySelector(".job-error-next").textContent = how.next;
    box.dataset.code = error.code || "";
  }

  // ---------------------------------------------------------------------------------------------
  // A batch: several photos sent together (POST /api/batches), one job each, one zip at the end.

  class BatchGroup {
    constructor({ files = null, options = null, id = null, memo = null }) {
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
      this.uploadProgress = 0;
      this.uploadAttempts = 0;
      this.pollErrors = 0;
      this.pollNote = "";

      const fragment = $("#batch-template").content.cloneNode(true);
      this.el = fragment.querySelector(".batch");
      this.q = (selector) => this.el.querySelector(selector);
      const titleId = nextId("batch-title");
      this.q(".job-name").id = titleId;
      this.q(".job-name").tabIndex = -1;
      this.q(".batch-card").setAttribute("aria-labelledby", titleId);
      this.list = this.q(".batch-jobs");
      this.q(".remove").addEventListener("click", () => this.onRemove());
      this.q(".retry").addEventListener("click", () => this.upload());
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
          apiFetch(`/api/batches/${body.id}`, { method: "DELETE" }).catch(() => {});
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
        const how = explain(error);
        if (how.auto && this.uploadAttempts < MAX_UPLOAD_RETRIES) {
          this.uploadAttempts += 1;
          const seconds = error.retryAfter ?? Math.min(60, 2 ** this.uploadAttempts);
          this.localStatus = "waiting";
          this.waitUntil = Date.now() + seconds * 1000;
          this.waitReason = how.title;
          this.render();
          this.timer = setTimeout(() => { if (!this.removed) this.upload(); }, seconds * 1000);
        } else {
          this.localStatus = "rejected";
          this.error = error.code === "file_too_large"
            ? { code: "batch_too_large", message: error.message } : error;
          this.render();
          announce(`${this.files.length} photos: ${this.explain(this.error).title}`);
        }
      });
    }

    explain(error) {
      if (error.code === "batch_too_large") {
        return { title: "Together these photos are too big to send at once.", next: "Add them in smaller groups." };
      }
      return explain(error);
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

    schedulePoll(seconds) {
      clearTimeout(this.timer);
      let delay = clamp(seconds, 0.5, 60);
      if (document.hidden) delay = Math.max(delay, 5);
      this.timer = setTimeout(() => this.poll(), delay * 1000);
    }

    async poll() {
      this.timer = null;
      if (this.removed || !this.id) return;
      try {
        const { body, retryAfter } = await apiFetch(`/api/batches/${this.id}`);
        if (this.removed) return;
        this.pollErrors = 0;
        this.pollNote = "";
        this.setRecord(body);
        if (!body.done) this.schedulePoll(retryAfter ?? 1);
      } catch (error) {
        if (this.removed) return;
        if (error.status === 404) {
          announce("A group of photos is no longer on the server and was removed from the list.");
          this.destroy();
          return;
        }
        backOff(this, error);
      }
    }

    pollNow() {
      if (this.timer && this.id && !this.terminal && !this.localStatus) {
        clearTimeout(this.timer);
        this.poll();
      }
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
        apiFetch(`/api/batches/${this.id}`, { method: "DELETE" }).catch(() => {});
        this.destroy();
      } else {
        this.render();
      }
    }

    async onRemove() {
      const button = this.q(".remove");
      if (!this.id) {
        if (this.abortUpload) this.abortUpload();
        clearTimeout(this.timer);
        this.destroy(true);
        return;
      }
      await deleteWithConfirmation(this, button, {
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
      const pills = { loading: "Checking…", uploading: "Uploading", waiting: "Waiting", rejected: "Not accepted",
        queued: "In line", running: "Restoring", succeeded: "Done", failed: "Failed" };
      const pill = this.q(".pill");
      pill.textContent = pills[status] || status;
      pill.className = `pill pill-${status}`;

      const block = this.q(".progress-block");
      block.hidden = !ACTIVE.has(status);
      if (!block.hidden) {
        let fraction = 0;
        let text = "Checking status…";
        if (status === "uploading") {
          fraction = this.uploadProgress * 0.999;
          text = this.uploadProgress >= 1 ? "Checking the photos…" : `Uploading ${count} photos… ${Math.round(this.uploadProgress * 100)}%`;
        } else if (status === "waiting") {
          text = `${this.waitReason} Sending again in ${Math.max(0, Math.ceil((this.waitUntil - Date.now()) / 1000))}\u00a0s.`;
        } else if (r) {
          fraction = r.progress || 0;
          const finished = (c.succeeded || 0) + (c.failed || 0) + (c.cancelled || 0);
          text = `${finished} of ${r.total} finished`;
        }
        if (this.pollNote) text = this.pollNote;
        setProgress(this.el, fraction, text, `Progress of ${count} photos`, status === "waiting" || status === "loading");
        const since = r && Date.parse(r.created_at);
        this.q(".elapsed").textContent = since ? clock((serverNow() - since) / 1000) : "";
      }
      showError(this.el, status === "rejected" ? this.error : null);
      if (status === "rejected") {
        const how = this.explain(this.error);
        this.q(".job-error-title").textContent = how.title;
        this.q(".job-error-next").textContent = how.next;
      }

      const zip = this.q(".zip");
      const zipReady = r && r.done && c.succeeded > 0 && r.links && r.links.zip;
      zip.hidden = !zipReady;
      if (zipReady) {
        zip.href = apiUrl(r.links.zip);
        zip.setAttribute("download", `restored-${this.id.slice(0, 8)}.zip`);
        zip.textContent = `Download all ${c.succeeded} (zip)`;
      }
      this.q(".retry").hidden = !(status === "rejected" && this.files && ["network", "busy", "rate_limited",
        "storage_unavailable", "server_error", "internal_error", "invalid_request", "auth_required"].includes(this.error.code));
      const remove = this.q(".remove");
      if (!this.confirming) {
        const label = !this.id ? (status === "rejected" ? "Dismiss" : "Cancel") : this.terminal ? "Delete all" : "Cancel all";
        remove.textContent = label;
        remove.classList.remove("btn-danger");
        remove.disabled = false;
        remove.setAttribute("aria-label", `${label}: ${count} photos`);
      }
      const expiry = this.q(".expiry");
      const expires = r && r.expires_at ? Date.parse(r.expires_at) : NaN;
      expiry.textContent = Number.isFinite(expires) && r.done ? `Kept for ${timeLeft(expires - serverNow())}` : "";
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Upload queue for single photos: a couple at a time, in the order added

  const uploads = {
    waiting: [],
    active: 0,
    enqueue(card) {
      if (!this.waiting.includes(card)) this.waiting.push(card);
      this.pump();
    },
    drop(card) {
      this.waiting = this.waiting.filter((c) => c !== card);
    },
    pump() {
      while (this.active < MAX_PARALLEL_UPLOADS && this.waiting.length) {
        const card = this.waiting.shift();
        if (card.removed) continue;
        this.active += 1;
        card.runUpload().finally(() => { this.active -= 1; this.pump(); });
      }
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Page-level wiring

  // items: what the list shows at the top level (job cards and batch groups), newest first.
  const state = { info: null, schema: {}, items: [] };

  const allCards = () => state.items.flatMap((item) => (item.kind === "batch" ? item.cards : [item]));

  function updateEmpty() {
    $("#jobs-empty").hidden = state.items.length > 0;
  }

  function updateDownloadAll() {
    const done = allCards().filter((c) => c.status === "succeeded");
    const button = $("#download-all");
    const onlyOneBatch = state.items.length === 1 && state.items[0].kind === "batch";
    button.hidden = done.length < 2 || onlyOneBatch; // a lone batch has its own zip button
    button.textContent = `Download all (${done.length})`;
  }

  async function downloadAll() {
    // A batch as its zip, single photos one by one, a moment apart (browsers may ask once to
    // allow several downloads from this page).
    const links = [];
    for (const item of state.items) {
      if (item.kind === "batch" && !item.q(".zip").hidden) links.push(item.q(".zip"));
      else if (item.kind === "batch") links.push(...item.cards.filter((c) => c.status === "succeeded").map((c) => c.q(".download")));
      else if (item.status === "succeeded") links.push(item.q(".download"));
    }
    for (const link of links) {
      link.click();
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
  }

  function showStandinBanner() {
    $("#standin-banner").hidden = false;
  }

  function addItems(items) {
    // What was added together keeps its order, above older photos.
    const list = $("#jobs");
    const first = list.firstChild;
    for (const item of items) list.insertBefore(item.el, first);
    state.items.unshift(...items);
    updateEmpty();
    // Show what was just added (on a phone the list starts below the options).
    const reduce = matchMedia("(prefers-reduced-motion: reduce)").matches;
    if (items.length) items[0].el.scrollIntoView({ behavior: reduce ? "auto" : "smooth", block: "nearest" });
  }

  function displayName(file, i, count) {
    if (file.name && file.name !== "image.png") return file.name;
    const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
    return `pasted-${stamp}${count > 1 ? `-${i + 1}` : ""}.png`;
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []).filter((f) => f && f.size !== undefined);
    if (!files.length) return;
    const options = readOptions();
    const maxBytes = state.info ? state.info.max_upload_bytes : Infinity;
    const named = files.map((file, i) => ({ file, name: displayName(file, i, files.length) }));
    // Refused here, before any upload: too big, empty, or plainly not an image.
    const refusal = ({ file }) =>
      file.size > maxBytes ? new ApiError(413, "file_too_large", `the file is ${megabytes(file.size)}; the limit is ${megabytes(maxBytes)}`)
        : file.size === 0 ? new ApiError(422, "empty_file", "the file is empty")
          : file.type && !file.type.startsWith("image/") && !/zip/.test(file.type)
            ? new ApiError(415, "not_an_image", "the file is not a JPEG, PNG or WebP image") : null;
    const refused = named.filter((f) => refusal(f));
    const sendable = named.filter((f) => !refusal(f));

    const items = refused.map((f) => {
      const card = new JobCard({ file: f.file, filename: f.name, options });
      card.reject(refusal(f));
      return card;
    });
    const isZip = (f) => /zip/.test(f.file.type) || /\.zip$/i.test(f.name);
    if (sendable.length > 1 || (sendable.length === 1 && isZip(sendable[0]))) {
      const group = new BatchGroup({ files: sendable, options });
      items.unshift(group);
      addItems(items);
      group.upload();
    } else {
      const cards = sendable.map((f) => new JobCard({ file: f.file, filename: f.name, options }));
      addItems([...cards, ...items]);
      cards.forEach((card) => card.upload());
    }
    announce(files.length === 1 ? `Added ${named[0].name}.` : `Added ${files.length} photos.`);
  }

  function wireDropAndPaste() {
    const input = $("#file-input");
    input.addEventListener("change", () => {
      addFiles(input.files);
      input.value = ""; // the same file can be added again
    });
    const zone = $("#dropzone");
    let depth = 0;
    const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
    window.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth += 1;
      document.body.classList.add("dragging");
    });
    window.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) document.body.classList.remove("dragging");
    });
    window.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault(); // anywhere on the page is a drop target; never navigate to the file
      event.dataTransfer.dropEffect = "copy";
      zone.classList.toggle("over", zone.contains(event.target));
    });
    window.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      document.body.classList.remove("dragging");
      zone.classList.remove("over");
      addFiles(event.dataTransfer.files);
    });
    document.addEventListener("paste", (event) => {
      const files = Array.from((event.clipboardData && event.clipboardData.files) || []).filter((f) => f.type.startsWith("image/"));
      if (!files.length) return; // ordinary text pastes go where they were meant to
      event.preventDefault();
      addFiles(files);
    });
  }

  function wireOptions() {
    const form = $("#options-form");
    form.addEventListener("submit", (event) => event.preventDefault());
    form.addEventListener("input", () => { refreshOptionDependencies(); saveOptions(); });
    form.addEventListener("change", () => { refreshOptionDependencies(); saveOptions(); });
    $("#reset-options").addEventListener("click", () => {
      try { localStorage.removeItem(OPTIONS_KEY); } catch (_) { /* ignore */ }
      if (state.info) buildOptionsForm(state.info.options, state.info.models || []);
      announce("Options reset to their defaults.");
    });
  }

  async function loadInfo() {
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
      clearTimeout(state.infoTimer);
      state.infoTimer = setTimeout(loadInfo, 10000);
    }
  }

  function restoreRecent() {
    const items = store.load().map((memo) => {
      if (memo.batch) return new BatchGroup({ id: memo.batch, memo });
      const card = new JobCard({ id: memo.id, filename: memo.filename });
      card.pendingExpiry = memo.expires_at;
      return card;
    });
    const list = $("#jobs");
    for (const item of items) list.append(item.el);
    state.items.push(...items);
    updateEmpty();
    store.save(); // drops expired entries
    items.forEach((item, i) => setTimeout(() => item.poll(), i * 60));
  }

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
      // Forget finished work once the server has deleted it.
      const r = item.record;
      if (r && r.expires_at && Date.parse(r.expires_at) <= serverNow() && item.terminal) {
        if (item.kind === "batch") item.destroy();
        else item.gone();
      }
    }
  }

  function init() {
    const docs = document.querySelector('a[href="docs"]');
    if (docs) docs.href = apiUrl("/docs");
    wireOptions();
    wireDropAndPaste();
    $("#download-all").addEventListener("click", downloadAll);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) for (const item of state.items) item.pollNow();
    });
    loadInfo().then(() => restoreRecent());
    setInterval(tick, 1000);
    setInterval(() => {
      for (const card of allCards()) if (card.status === "succeeded") card.renderActions("succeeded");
    }, 60000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

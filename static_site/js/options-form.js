/* The options form, built from the API's own schema (GET /api/info → options): the controls,
 * their dependencies, the choices remembered in localStorage, and the typed values a submission
 * sends (only what differs from the API's defaults). */

import { $, announce, h } from "./dom.js";
import { state } from "./store.js";

const OPTIONS_KEY = "face-restore.options.v1";

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
  small_faces: {
    label: "Small faces", values: { auto: "Look for them", off: "Don't look (faster)" },
    help: "When a large photo's faces come out small, it is searched again, tile by tile, for smaller faces " +
      "(a few seconds on a 12-megapixel photo). Portraits and close-ups don't need it.",
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
  color: {
    label: "Colour", main: true,
    values: { auto: "Keep black-and-white and sepia", keep: "Always the photo's own tone", restore: "Restored colours" },
    help: "Old photos stay black-and-white or sepia by default; colour photos get the restored colours.",
  },
  texture: { label: "Skin texture", main: true, control: "range", step: 0.05, show: (v) => (v ? `${Math.round(v * 100)}%` : "off") },
  detect_only: { label: "Choose the faces first", main: true,
    help: "Find the faces, then pick the ones to restore (group photos, people in the background)." },
  // Boxes are for the API and the command line; the page chooses faces on the photo itself.
  face_boxes: { hidden: true },
};
const ORDER = Object.keys(OPTION_UI);

// Each option's schema without its nullable wrapper, from the last GET /api/info.
let schema = {};

export const optionLabel = (name) => (OPTION_UI[name] && OPTION_UI[name].label) ||
  (schema[name] && schema[name].title) || name;

/** The schema of a field without its nullable wrapper: {type, enum, minimum, maximum, ...}. */
function baseSchema(prop) {
  if (prop.anyOf) {
    const inner = prop.anyOf.find((p) => p.type !== "null") || {};
    return { ...inner, nullable: prop.anyOf.some((p) => p.type === "null"), description: prop.description, default: prop.default, title: prop.title };
  }
  return { ...prop, nullable: false };
}

function validValue(field, value) {
  if (value === null || value === undefined || value === "") return field.nullable || field.type === "string";
  if (field.enum) return field.enum.map(String).includes(String(value));
  if (field.type === "boolean") return typeof value === "boolean";
  if (field.type === "integer" || field.type === "number") {
    const n = Number(value);
    return Number.isFinite(n) && (field.type === "number" || Number.isInteger(n)) &&
      (field.minimum === undefined || n >= field.minimum) && (field.maximum === undefined || n <= field.maximum);
  }
  return typeof value === "string";
}

export function buildOptionsForm(schemaProps, availableModels) {
  schema = {};
  for (const [name, prop] of Object.entries(schemaProps)) schema[name] = baseSchema(prop);
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(OPTIONS_KEY) || "{}") || {}; } catch (_) { saved = {}; }

  const names = Object.keys(schema).sort((a, b) => {
    const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
    return (ia < 0 ? 999 : ia) - (ib < 0 ? 999 : ib);
  });
  const main = h("div", { class: "options-main" });
  const moreBody = h("div", { class: "options-more-body" });
  const more = h("details", { class: "options-more" },
    h("summary", {}, "More options"), moreBody);

  for (const name of names) {
    const field = schema[name];
    const ui = OPTION_UI[name] || {};
    if (ui.hidden) continue;
    let value = name in saved && validValue(field, saved[name]) ? saved[name] : field.default;
    if (name === "model" && availableModels.length && !availableModels.includes(String(value))) value = availableModels[0];
    const control = buildField(name, field, ui, value, name === "model" ? availableModels : null);
    (ui.main ? main : moreBody).append(control);
  }
  const container = $("#options-fields");
  container.replaceChildren(main, more);
  if (Object.keys(saved).some((k) => schema[k] && saved[k] !== schema[k].default)) more.open = !!moreBody.querySelector(".changed");
  refreshOptionDependencies();
}

function buildField(name, field, ui, value, availableModels) {
  const id = `opt-${name}`;
  const helpId = `${id}-help`;
  const help = ui.help || field.description || "";
  const label = ui.label || field.title || name;
  const wrap = h("div", { class: "field", "data-option": name });
  const helpEl = help ? h("p", { class: "field-help", id: helpId }, help) : null;
  const describedBy = helpEl ? helpId : null;
  const values = field.enum || (ui.values && field.type === "integer" ? Object.keys(ui.values).map(Number) : null);

  if (values && (field.enum || ui.control === "segmented")) {
    const fieldset = h("fieldset", { class: "segmented-field", "aria-describedby": describedBy },
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
    return wrap;
  }
  if (field.type === "boolean") {
    wrap.classList.add("field-switch");
    wrap.append(
      h("input", { type: "checkbox", role: "switch", id, name, checked: !!value, "aria-describedby": describedBy }),
      h("label", { for: id }, label),
    );
  } else if (ui.control === "range" && field.minimum !== undefined && field.maximum !== undefined) {
    const output = h("output", { for: id, id: `${id}-out` }, ui.show ? ui.show(value) : String(value));
    const input = h("input", {
      type: "range", id, name, min: field.minimum, max: field.maximum,
      step: ui.step || (field.type === "integer" ? 1 : "any"), value, "aria-describedby": describedBy,
    });
    input.addEventListener("input", () => {
      output.textContent = ui.show ? ui.show(Number(input.value)) : input.value;
      input.setAttribute("aria-valuetext", output.textContent);
    });
    input.setAttribute("aria-valuetext", output.textContent);
    wrap.append(h("div", { class: "field-row" }, h("label", { for: id }, label), output), input);
  } else {
    const numeric = field.type === "integer" || field.type === "number";
    wrap.append(
      h("label", { for: id }, label),
      h("input", {
        type: numeric ? "number" : "text", id, name, value: value === null || value === undefined ? "" : value,
        min: field.minimum, max: field.maximum, step: field.type === "integer" ? 1 : numeric ? "any" : null,
        inputmode: numeric ? "numeric" : null, placeholder: ui.placeholder || null, autocomplete: "off",
        "aria-describedby": describedBy,
      }),
    );
  }
  if (helpEl) wrap.append(helpEl);
  return wrap;
}

/** Current option values, typed per the schema. */
export function readOptions() {
  const form = $("#options-form");
  const values = {};
  for (const [name, field] of Object.entries(schema)) {
    const controls = form.elements.namedItem(name);
    if (!controls) continue;
    let raw;
    if (controls instanceof RadioNodeList) raw = controls.value;
    else if (controls.type === "checkbox") raw = controls.checked;
    else raw = controls.value.trim();
    if (field.type === "boolean") values[name] = !!raw;
    else if (raw === "" || raw === null) values[name] = null;
    else if (field.type === "integer" || field.type === "number") values[name] = Number(raw);
    else values[name] = raw;
  }
  return values;
}

/** Form fields for a submission: only what differs from the API's defaults. */
export function submissionFields(options) {
  const fields = {};
  for (const [name, value] of Object.entries(options)) {
    const field = schema[name];
    if (!field || value === null || value === "" || value === field.default) continue;
    if (OPTION_UI[name] && OPTION_UI[name].when && !dependencyMet(OPTION_UI[name].when, options)) continue;
    fields[name] = String(value);
  }
  return fields;
}

const dependencyMet = (when, options) =>
  Object.entries(when).every(([other, allowed]) => allowed.includes(String(options[other])));

function refreshOptionDependencies() {
  const options = readOptions();
  for (const el of document.querySelectorAll("#options-fields .field")) {
    const name = el.dataset.option;
    const ui = OPTION_UI[name];
    const field = schema[name];
    if (ui && ui.when) el.hidden = !dependencyMet(ui.when, options);
    el.classList.toggle("changed", options[name] !== field.default && !(options[name] === null && field.default === null));
  }
}

function saveOptions() {
  try { localStorage.setItem(OPTIONS_KEY, JSON.stringify(readOptions())); } catch (_) { /* ignore */ }
}

/** A short line saying how a photo is being restored, for its card. */
export function optionSummary(options) {
  if (!options) return "";
  const parts = [];
  if (options.model) parts.push(`GFPGAN ${options.model}`);
  if (options.upscale) parts.push(`${options.upscale}×`);
  if (options.strength !== undefined && options.strength !== 1) parts.push(`strength ${Math.round(options.strength * 100)}%`);
  if (options.blend_mask === "box") parts.push("soft-square blend");
  if (options.only_center_face) parts.push("centre face only");
  if (options.aligned) parts.push("aligned face");
  if (options.color && options.color !== "auto") parts.push(options.color === "keep" ? "photo's tone" : "restored colours");
  if (options.texture) parts.push(`texture ${Math.round(options.texture * 100)}%`);
  if (options.small_faces === "off") parts.push("no small-face search");
  if (options.detect_only) parts.push("choosing faces");
  if (options.face_boxes) parts.push("chosen faces");
  if (options.output_format && options.output_format !== "png") parts.push(options.output_format.toUpperCase());
  return parts.join(" · ");
}

export function wireOptions() {
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

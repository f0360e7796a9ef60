/* Adding photos: the file input, drag and drop anywhere on the page, and pasting an image. Files
 * that are plainly unusable (too big, empty, not an image) are refused here, before any upload;
 * one photo becomes a job card, several (or a zip) one batch group. */

import { ApiError } from "./api.js";
import { BatchGroup } from "./batch-group.js";
import { $, announce } from "./dom.js";
import { megabytes } from "./format.js";
import { JobCard } from "./job-card.js";
import { addItems } from "./job-list.js";
import { readOptions } from "./options-form.js";
import { state } from "./store.js";

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

export function wireUploads() {
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

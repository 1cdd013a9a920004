// maekit app page: plain JS over the HTTP API (GET /api/models, /api/samples;
// POST /api/reconstruct, /api/classify, /api/features). No build step, no framework.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], image: null, pending: false, busy: false };

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function call(path, form) {
  const response = await fetch(path, form ? { method: "POST", body: form } : {});
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.detail) message = body.detail;
    } catch (e) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function imageForm(fields) {
  const form = new FormData();
  if (state.image.file) form.append("image", state.image.file);
  else form.append("sample", state.image.sample);
  for (const [key, value] of Object.entries(fields)) form.append(key, String(value));
  return form;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function notesOf(response) {
  try { return JSON.parse(response.headers.get("X-Maekit-Notes") || "[]"); } catch (e) { return []; }
}

function card(model, title) {
  const head = el("h3", {}, `${model.id} `, el("span", { class: "muted" }, title));
  if (model.norm_pix_loss) head.append(el("span", { class: "badge" }, "norm-pix"));
  return el("div", { class: "card pending" }, head);
}

function selectedModels() {
  return state.models.filter((m) => $(`use_${m.id}`).checked);
}

async function reconstructCard(model, index) {
  // The seed as typed (the server checks it); "same mask" off: seed + model index.
  const typed = $("seed").value.trim() || "0";
  const seed = $("same_mask").checked || index === 0 ? typed : String(parseInt(typed, 10) + index);
  const box = card(model, `${model.model_name}, reconstruction, seed ${seed}`);
  const fields = { model: model.id, mask_ratio: $("mask_ratio").value, seed };
  const work = call("/api/reconstruct", imageForm(fields)).then(async (response) => {
    const img = el("img", { class: "result", alt: `reconstruction by ${model.id}` });
    img.src = URL.createObjectURL(await response.blob());
    const labels = el("div", { class: "panels" }, el("span", {}, "original"), el("span", {}, "masked"),
      el("span", {}, "reconstruction"), el("span", {}, "reconstruction + visible"));
    const loss = parseFloat(response.headers.get("X-Maekit-Loss"));
    const units = model.norm_pix_loss ? " (norm-pix units; panels re-use each patch's mean and std "
      + "from the original, as the reference notebooks do)" : "";
    const meta = el("div", { class: "meta" }, `loss ${loss.toFixed(4)}${units} \u00b7 `
      + `${(parseFloat(response.headers.get("X-Maekit-Seconds")) * 1000).toFixed(0)} ms`);
    return [labels, img, meta, response];
  });
  return { box, work };
}

async function classifyCard(model) {
  const k = Math.min(5, model.num_classes || 5);
  const box = card(model, `${model.model_name}, top-${k}`);
  const work = call("/api/classify", imageForm({ model: model.id, top_k: k })).then(async (response) => {
    const rows = await response.json();
    const list = el("ol", { class: "top5" });
    for (const row of rows) {
      const bar = el("div", { class: "bar" });
      bar.style.width = `${(row.score * 100).toFixed(1)}%`;
      list.append(el("li", {}, el("span", {}, row.label, bar), el("span", {}, row.score.toFixed(4))));
    }
    return [list, response];
  });
  return { box, work };
}

async function featureCard(model) {
  const box = card(model, `${model.model_name}, features: input | first 3 principal components as RGB`);
  const work = call("/api/features", imageForm({ model: model.id })).then(async (response) => {
    const img = el("img", { class: "result features", alt: `patch features of ${model.id}` });
    img.src = URL.createObjectURL(await response.blob());
    return [img, response];
  });
  return { box, work };
}

async function runOnce() {
  if (!state.image) return;
  showError("");
  const results = $("results");
  const jobs = [];
  selectedModels().forEach((model, index) => {
    if (model.views.includes("reconstruct")) jobs.push(reconstructCard(model, index));
    if (model.views.includes("classify")) jobs.push(classifyCard(model));
    if ($("show_features").checked && model.views.includes("features")) jobs.push(featureCard(model));
  });
  const built = await Promise.all(jobs);
  results.replaceChildren(...built.map((job) => job.box));
  $("status").textContent = "working\u2026";
  const errors = [];
  await Promise.all(built.map(async ({ box, work }) => {
    try {
      const parts = await work;
      const response = parts.pop();
      box.append(...parts);
      for (const note of notesOf(response)) box.append(el("p", { class: "notes" }, note));
    } catch (err) {
      box.append(el("div", { class: "error" }, err.message));
      errors.push(err.message);
    }
    box.classList.remove("pending");
  }));
  if (!built.length) results.replaceChildren(el("div", { class: "card" }, "Select a model on the left."));
  showError([...new Set(errors)].join("\n"));
  $("status").textContent = errors.length ? "" : "ready";
}

// One run at a time; changes made meanwhile trigger exactly one more run.
async function schedule() {
  state.pending = true;
  if (state.busy) return;
  state.busy = true;
  try {
    while (state.pending) {
      state.pending = false;
      await runOnce();
    }
  } finally {
    state.busy = false;
  }
}

let timer = null;
function scheduleSoon() {
  clearTimeout(timer);
  timer = setTimeout(schedule, 120);
}

function chooseSample(sample, button) {
  state.image = { sample: sample.name };
  $("preview").src = sample.url;
  $("image_name").textContent = `sample: ${sample.name}`;
  document.querySelectorAll(".samples button").forEach((b) => b.classList.toggle("selected", b === button));
  schedule();
}

async function init() {
  try {
    state.models = await (await call("/api/models")).json();
    const samples = await (await call("/api/samples")).json();
    for (const model of state.models) {
      const kind = model.task === "masked_image_modeling" ? "pretraining" : "classifier";
      const [h, w] = model.img_size;
      const size = h === w ? `${h}` : `${h}x${w}`;
      const box = el("input", { type: "checkbox", id: `use_${model.id}` });
      box.checked = true;
      box.addEventListener("change", schedule);
      $("models").append(el("label", { class: "model", title: model.source }, box, ` ${model.id}`,
        el("span", { class: "badge" }, kind), el("span", { class: "badge" }, `${size} px`)));
    }
    for (const sample of samples) {
      const button = el("button", { type: "button", title: sample.name },
        el("img", { src: sample.url, alt: sample.name }));
      button.addEventListener("click", () => chooseSample(sample, button));
      $("samples").append(button);
    }
    $("upload").addEventListener("change", () => {
      const file = $("upload").files[0];
      if (!file) return;
      state.image = { file };
      $("preview").src = URL.createObjectURL(file);
      $("image_name").textContent = `upload: ${file.name} (${(file.size / 1024).toFixed(0)} KB)`;
      document.querySelectorAll(".samples button").forEach((b) => b.classList.remove("selected"));
      schedule();
    });
    $("mask_ratio").addEventListener("input", () => {
      $("mask_ratio_value").textContent = parseFloat($("mask_ratio").value).toFixed(2);
      scheduleSoon();
    });
    $("seed").addEventListener("change", schedule);
    $("new_seed").addEventListener("click", () => {
      $("seed").value = Math.floor(Math.random() * 100000);
      schedule();
    });
    $("same_mask").addEventListener("change", schedule);
    $("show_features").addEventListener("change", schedule);
    // Start-up values from the address, so a view can be shared: ?mask_ratio=0.5&seed=3&features=1&sample=coffee.jpg
    const query = new URLSearchParams(window.location.search);
    if (query.has("mask_ratio")) {
      $("mask_ratio").value = query.get("mask_ratio");
      $("mask_ratio_value").textContent = parseFloat($("mask_ratio").value).toFixed(2);
    }
    if (query.has("seed")) $("seed").value = query.get("seed");
    if (query.get("features") === "1") $("show_features").checked = true;
    const first = Math.max(0, samples.findIndex((s) => s.name === query.get("sample")));
    if (samples.length) chooseSample(samples[first], $("samples").querySelectorAll("button")[first]);
  } catch (err) {
    showError(`cannot reach the server: ${err.message}`);
  }
}

init();

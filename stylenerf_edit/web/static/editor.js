"use strict";
// The editor page: every action is one request to this server (see stylenerf_edit/web/server.py).

const $ = (id) => document.getElementById(id);
const S = { token: null, info: null, latent: null, busy: false, dirty: false, poll: null, previewVersion: -1,
            stats: { frames: 0, ms: [] } };
window.editorStats = S.stats;

function say(text, error = false) {
  const box = $("message");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(`/api/s/${S.token}/${path}`, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

const post = (path, data) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify(data || {}) });

async function upload(path, file) {
  if (file.size > S.info.max_upload_mb * 2 ** 20) throw new Error(`${file.name} is larger than ${S.info.max_upload_mb} MB`);
  return api(path, { method: "POST", body: file, headers: { "X-Filename": encodeURIComponent(file.name),
                                                            "Content-Type": "application/octet-stream" } });
}

async function guarded(action) {
  try { await action(); } catch (e) { say(e.message, true); }
}

// ---- 1: photo -------------------------------------------------------------------------------------------------
function showAlignment(files) {
  $("alignment").src = files.alignment;
  $("crop").src = files.crop;
  $("invert").disabled = false;
  $("job-status").textContent = "ready to invert";
  $("progress").value = 0;
  $("live").removeAttribute("src");
  $("inverted-latent").hidden = true;
  $("fit-warnings").textContent = "";
  setLatent(null);
}

async function choosePhoto(file) {
  say(`aligning ${file.name} …`);
  const aligned = $("photo-aligned").checked ? "1" : "0";
  const result = await upload(`photo?aligned=${aligned}`, file);
  showAlignment(result.files);
  say(`${file.name}: face found and aligned; press Invert`);
}

async function chooseSample(index) {
  const result = await post(`sample/${index}`);
  showAlignment(result.files);
  say(`sample ${S.info.samples[index]} (an aligned crop); press Invert`);
}

// ---- 2: inversion ---------------------------------------------------------------------------------------------
async function startInversion() {
  const steps = parseInt($("steps").value, 10);
  await post("invert", { steps, pti: $("pti").checked });
  $("invert").disabled = true;
  $("cancel").disabled = false;
  document.body.dataset.job = "running";
  say("inverting …");
  S.poll = setInterval(() => guarded(pollJob), 400);
}

function seconds(s) {
  if (s === null || s === undefined) return "…";
  return s < 90 ? `${Math.round(s)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

async function pollJob() {
  const job = await api("job");
  if (job.state === "idle") return;
  $("progress").max = Math.max(1, job.total);
  $("progress").value = job.done;
  const what = job.stage === "tune" ? "tuning" : job.stage === "invert" ? "step" : "aligning and estimating the pose";
  const loss = job.lpips !== null ? `, LPIPS ${job.lpips.toFixed(3)}` : "";
  $("job-status").textContent = job.stage === "aligning" ? what :
    `${what} ${job.step}/${job.steps}${loss} · ${seconds(job.elapsed)} elapsed, ETA ${seconds(job.eta)}`;
  if (job.preview_version !== S.previewVersion && job.preview_version > 0) {
    S.previewVersion = job.preview_version;
    $("live").src = `/api/s/${S.token}/job/preview.png?v=${job.preview_version}`;
  }
  if (job.state === "running") return;
  clearInterval(S.poll);
  $("cancel").disabled = true;
  $("invert").disabled = false;
  document.body.dataset.job = job.state;
  if (job.state === "done") {
    $("live").src = job.files["reconstruction.png"];
    $("inverted-latent").href = `${job.files["latent.npz"]}&download=1`;
    $("inverted-latent").hidden = false;
    const m = job.metrics;
    $("job-status").textContent = `done in ${seconds(job.elapsed)}: PSNR ${m.psnr.toFixed(2)} dB, LPIPS ${m.lpips.toFixed(3)}` +
      (m.pti_psnr ? `; tuned PSNR ${m.pti_psnr.toFixed(2)} dB` : "");
    $("fit-warnings").textContent = job.warnings.map((w) => `warning: ${w}`).join("\n");
    say(job.warnings.length ? "inverted, with warnings (left)" : "inverted: edit it on the right");
    await openInverted();
  } else {
    $("job-status").textContent = job.message;
    say(job.message, job.state === "failed");
  }
}

async function openInverted() {
  const state = await api("state");
  setLatent(state.latent);
}

// ---- latents --------------------------------------------------------------------------------------------------
async function chooseLatent(files) {
  const list = Array.from(files);
  const latent = list.find((f) => f.name.endsWith(".npz"));
  const tuning = list.find((f) => f.name.endsWith(".safetensors"));
  if (!latent) throw new Error("choose a latent .npz file (and, optionally, its tuning.safetensors)");
  let result = await upload("latent", latent);
  if (tuning) result = await upload("tuning", tuning);
  setLatent(result.latent);
  say(`${latent.name} opened${result.latent.tuned ? " with its pivotal tuning" : ""}`);
}

async function openListed() {
  const result = await post("open", { name: $("latent-list").value });
  setLatent(result.latent);
  say(`${$("latent-list").value} opened${result.latent.tuned ? " with its pivotal tuning" : ""}`);
}

// ---- 3: editing -----------------------------------------------------------------------------------------------
function setLatent(latent) {
  S.latent = latent;
  $("edit-panel").classList.toggle("disabled", !latent);
  for (const id of ["reset", "export"]) $(id).disabled = !latent;
  $("exports").hidden = true;
  if (!latent) { $("view").removeAttribute("src"); $("view-caption").textContent = "no latent yet"; return; }
  resetSliders();
  requestRender();
}

function resetSliders() {
  for (const input of document.querySelectorAll("#sliders input")) input.value = 0;
  $("yaw").value = S.latent.yaw.toFixed(1);
  $("pitch").value = S.latent.pitch.toFixed(1);
  $("rows").value = "";
  updateOutputs();
}

function updateOutputs() {
  for (const input of document.querySelectorAll("input[type=range]")) {
    const out = document.querySelector(`output[for="${input.id}"]`);
    const value = parseFloat(input.value);
    out.textContent = input.id === "yaw" || input.id === "pitch" ? `${value.toFixed(1)}°` :
      `${value > 0 ? "+" : ""}${value.toFixed(2)}`;
  }
}

function currentView() {
  const strengths = {};
  for (const input of document.querySelectorAll("#sliders input")) {
    const value = parseFloat(input.value);
    if (value) strengths[input.dataset.direction] = value;
  }
  return { strengths, rows: $("rows").value || null, yaw: parseFloat($("yaw").value),
           pitch: parseFloat($("pitch").value) };
}

// While a slider moves the page asks for previews (half resolution, coarse samples: about 2.5x faster); when it
// is released, or anything else changes, for the full image.
function requestRender(preview = false) {
  if (!S.latent) return;
  S.dirty = true;
  S.preview = preview;
  $("view").dataset.pending = "1";
  if (!S.busy) pump();
}

// One render in flight; positions reached while it runs collapse into the next one, so dragging never queues.
async function pump() {
  S.busy = true;
  while (S.dirty) {
    S.dirty = false;
    const view = currentView();
    const preview = S.preview;
    const t0 = performance.now();
    try {
      const response = await fetch(`/api/s/${S.token}/render`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...view, preview }) });
      if (!response.ok) throw new Error((await response.json()).error);
      const blob = await response.blob();
      const old = $("view").src;
      $("view").src = URL.createObjectURL(blob);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      const warnings = JSON.parse(response.headers.get("X-Warnings") || "[]");
      $("warnings").textContent = warnings.join(" · ");
      const ms = performance.now() - t0;
      S.stats.frames += 1;
      S.stats.ms.push(ms);
      const recent = S.stats.ms.slice(-20);
      const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
      $("fps").textContent = `last ${preview ? "preview" : "frame"} ${Math.round(ms)} ms (server ` +
        `${response.headers.get("X-Render-Ms")} ms); ` +
        `${(1000 / mean).toFixed(1)} frames/s over the last ${recent.length}`;
      $("view").dataset.renders = String(S.stats.frames);
      $("view").dataset.view = JSON.stringify(view);
      $("view").dataset.preview = preview ? "1" : "0";
      const edits = Object.entries(view.strengths).map(([k, v]) => `${k} ${v > 0 ? "+" : ""}${v}`);
      $("view-caption").textContent = `${edits.join(", ") || "unedited"} · yaw ${view.yaw.toFixed(1)}°, pitch ${view.pitch.toFixed(1)}°`;
    } catch (e) {
      say(e.message, true);
    }
  }
  S.busy = false;
  $("view").dataset.pending = "0";
}

// ---- 4: downloads ---------------------------------------------------------------------------------------------
async function exportEdit() {
  say("rendering the before/after sheet, the sweep and the files …");
  $("export").disabled = true;
  try {
    const result = await post("export", currentView());
    const files = result.files;
    $("before-after").src = files["before_after.png"];
    $("sweep").src = files["sweep.gif"];
    const list = $("downloads");
    list.replaceChildren();
    for (const [name, url] of Object.entries(files)) {
      const a = document.createElement("a");
      a.href = `${url}&download=1`;
      a.textContent = name;
      a.dataset.file = name;
      a.setAttribute("download", name);
      const li = document.createElement("li");
      li.append(a);
      list.append(li);
    }
    $("exports").hidden = false;
    say("downloads ready");
  } finally {
    $("export").disabled = false;
  }
}

// ---- setup ----------------------------------------------------------------------------------------------------
function buildSliders() {
  const box = $("sliders");
  for (const s of S.info.sliders) {
    const row = document.createElement("div");
    row.className = "slider";
    row.innerHTML = `<label></label><input type="range" min="-3" max="3" step="0.05" value="0"><output></output>` +
      `<small></small>`;
    row.querySelector("label").textContent = s.name.replace(/_/g, " ");
    const input = row.querySelector("input");
    input.id = `dir-${s.name}`;
    input.dataset.direction = s.name;
    row.querySelector("label").htmlFor = input.id;
    row.querySelector("output").htmlFor = input.id;
    row.querySelector("small").textContent =
      `the model's own faces: ${s.low.toFixed(1)} … +${s.high.toFixed(1)} · rows ${s.rows}`;
    box.append(row);
  }
  $("yaw").min = -S.info.yaw_max; $("yaw").max = S.info.yaw_max;
  $("pitch").min = -S.info.pitch_max; $("pitch").max = S.info.pitch_max;
  for (const input of document.querySelectorAll("input[type=range]")) {
    input.addEventListener("input", () => { updateOutputs(); requestRender(true); });
    input.addEventListener("change", () => requestRender(false));
  }
  $("rows").addEventListener("change", () => requestRender(false));
}

async function start() {
  const response = await fetch("/api/session", { method: "POST" });
  const info = await response.json();
  if (!response.ok) { say(info.error, true); return; }
  S.info = info;
  S.token = info.token;
  $("model").textContent = `${info.model} · ${info.resolution} px`;
  $("steps").value = info.default_steps;
  info.samples.forEach((name, i) => {
    const img = document.createElement("img");
    img.src = `/samples/${i}`;
    img.alt = img.title = name;
    img.dataset.sample = String(i);
    img.addEventListener("click", () => guarded(() => chooseSample(i)));
    $("samples").append(img);
  });
  if (info.latents.length) {
    for (const name of info.latents) $("latent-list").append(new Option(name, name));
    $("listed").hidden = false;
  }
  buildSliders();
  $("photo-file").addEventListener("change", (e) => e.target.files.length && guarded(() => choosePhoto(e.target.files[0])));
  $("latent-file").addEventListener("change", (e) => e.target.files.length && guarded(() => chooseLatent(e.target.files)));
  $("open-listed").addEventListener("click", () => guarded(openListed));
  $("invert").addEventListener("click", () => guarded(startInversion));
  $("cancel").addEventListener("click", () => guarded(() => post("cancel")));
  $("reset").addEventListener("click", () => { resetSliders(); requestRender(); });
  $("export").addEventListener("click", () => guarded(exportEdit));
  setInterval(() => fetch(`/api/s/${S.token}/ping`, { method: "POST" }), 15000);
  window.addEventListener("pagehide", () => navigator.sendBeacon(`/api/s/${S.token}/close`));
  document.body.dataset.ready = "1";
}

start().catch((e) => say(e.message, true));

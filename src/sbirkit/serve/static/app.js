// sbirkit drawing page: draw (mouse, touch, pen or keyboard) or drop a file; results update as you draw.
// Talks only to the server that served it (relative URLs); no external scripts, fonts or images.
"use strict";

(function () {
  const DEBOUNCE_MS = 250;   // wait this long after the last change before searching...
  const MAX_WAIT_MS = 700;   // ...but search at least this often while the pen keeps moving
  const FILE_TYPES = {
    "image/png": "image/png", "image/jpeg": "image/jpeg", "image/webp": "image/webp",
    "image/gif": "image/gif", "image/svg+xml": "image/svg+xml",
  };
  const EXTENSIONS = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp",
                       gif: "image/gif", svg: "image/svg+xml" };

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const SIDE = pad.width;
  const ui = {
    info: $("info"), status: $("status"), error: $("error"), results: $("results"), empty: $("empty"),
    width: $("width"), widthValue: $("width-value"), k: $("k"), cls: $("class"), gallery: $("gallery"),
    galleryLabel: $("gallery-label"), fileKind: $("file-kind"), preview: $("preview"), hint: $("hint"),
    drop: $("drop"), dropCover: $("drop-cover"), file: $("file"), panel: document.querySelector(".results"),
  };

  const state = {
    strokes: [],          // [[xs], [ys]] in canvas pixels, Quick, Draw! style
    current: null,        // the stroke being drawn
    width: Number(ui.width.value),
    file: null,           // a dropped / opened file used as the query instead of the drawing
    info: null,
    controller: null,     // AbortController of the request in flight
    seq: 0,
    timer: null,
    pendingSince: null,
    kb: { x: SIDE / 2, y: SIDE / 2, down: false, shown: false },
    frame: 0,
  };

  // ---- drawing -------------------------------------------------------------------------------
  function drawStroke(stroke) {
    const xs = stroke[0], ys = stroke[1];
    if (!xs.length) return;
    if (xs.length === 1) {
      ctx.beginPath();
      ctx.arc(xs[0], ys[0], state.width / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(xs[0], ys[0]);
    for (let i = 1; i < xs.length; i++) ctx.lineTo(xs[i], ys[i]);
    ctx.stroke();
  }

  function redraw() {
    state.frame = 0;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, SIDE, SIDE);
    ctx.strokeStyle = "#000";
    ctx.fillStyle = "#000";
    ctx.lineWidth = state.width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const s of state.strokes) drawStroke(s);
    if (state.current) drawStroke(state.current);
    if (state.kb.shown) {  // the keyboard pen
      const { x, y, down } = state.kb;
      ctx.save();
      ctx.strokeStyle = down ? "#0b5fff" : "#d93025";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(x, y, Math.max(6, state.width / 2 + 3), 0, 2 * Math.PI);
      ctx.moveTo(x - 12, y); ctx.lineTo(x + 12, y); ctx.moveTo(x, y - 12); ctx.lineTo(x, y + 12);
      ctx.stroke();
      ctx.restore();
    }
    ui.hint.hidden = hasInk() || !!state.file;
  }

  function requestRedraw() {
    if (!state.frame) state.frame = requestAnimationFrame(redraw);
  }

  function hasInk() {
    return state.strokes.length > 0 || (state.current !== null && state.current[0].length > 0);
  }

  function canvasPoint(ev) {
    const r = pad.getBoundingClientRect();
    const x = ((ev.clientX - r.left) * SIDE) / r.width;
    const y = ((ev.clientY - r.top) * SIDE) / r.height;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  function addPoint(stroke, p) {
    const n = stroke[0].length;
    if (n && stroke[0][n - 1] === p[0] && stroke[1][n - 1] === p[1]) return;
    stroke[0].push(p[0]);
    stroke[1].push(p[1]);
  }

  pad.addEventListener("pointerdown", (ev) => {
    if (ev.pointerType === "mouse" && ev.button !== 0) return;
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    dropFile();
    state.kb.shown = false;
    state.current = [[], []];
    addPoint(state.current, canvasPoint(ev));
    requestRedraw();
  });

  pad.addEventListener("pointermove", (ev) => {
    if (!state.current) return;
    const events = typeof ev.getCoalescedEvents === "function" ? ev.getCoalescedEvents() : [];
    for (const e of events.length ? events : [ev]) addPoint(state.current, canvasPoint(e));
    requestRedraw();
    changed();
  });

  function endStroke() {
    if (!state.current) return;
    if (state.current[0].length) state.strokes.push(state.current);
    state.current = null;
    requestRedraw();
    changed();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("lostpointercapture", endStroke);

  // keyboard drawing: arrows move the pen, Space/Enter puts it down or lifts it
  pad.addEventListener("focus", () => {
    if (pad.matches(":focus-visible")) { state.kb.shown = true; requestRedraw(); }
  });
  pad.addEventListener("blur", () => {
    if (state.kb.down) { state.kb.down = false; endStroke(); }
    state.kb.shown = false;
    requestRedraw();
  });
  pad.addEventListener("keydown", (ev) => {
    const kb = state.kb;
    const step = ev.shiftKey ? 32 : 8;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (ev.key in moves) {
      ev.preventDefault();
      kb.shown = true;
      kb.x = Math.min(SIDE, Math.max(0, kb.x + moves[ev.key][0]));
      kb.y = Math.min(SIDE, Math.max(0, kb.y + moves[ev.key][1]));
      if (kb.down && state.current) { addPoint(state.current, [kb.x, kb.y]); changed(); }
      requestRedraw();
    } else if (ev.key === " " || ev.key === "Enter") {
      ev.preventDefault();
      kb.shown = true;
      if (kb.down) {
        kb.down = false;
        endStroke();
      } else {
        dropFile();
        kb.down = true;
        state.current = [[kb.x], [kb.y]];
        requestRedraw();
      }
      announce(kb.down ? "Pen down" : "Pen up");
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      clearAll();
    }
  });

  document.addEventListener("keydown", (ev) => {
    const typing = ev.target instanceof HTMLInputElement && ev.target.type !== "range";
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z" && !typing) {
      ev.preventDefault();
      undo();
    }
  });

  function undo() {
    if (state.file) { dropFile(); changed(true); return; }
    if (state.current) state.current = null;
    else state.strokes.pop();
    state.kb.down = false;
    requestRedraw();
    changed(true);
  }

  function clearAll() {
    dropFile();
    state.strokes = [];
    state.current = null;
    state.kb.down = false;
    requestRedraw();
    changed(true);
  }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  ui.width.addEventListener("input", () => {
    state.width = Number(ui.width.value);
    ui.widthValue.textContent = String(state.width);
    requestRedraw();
    if (hasInk()) changed();
  });
  for (const el of [ui.k, ui.cls, ui.gallery]) el.addEventListener("change", () => changed(true));
  for (const radio of document.querySelectorAll("input[name=kind]")) radio.addEventListener("change", () => changed(true));

  // ---- files: open or drop a sketch or photo ------------------------------------------------------
  function fileType(file) {
    if (FILE_TYPES[file.type]) return FILE_TYPES[file.type];
    const ext = (file.name.split(".").pop() || "").toLowerCase();
    return EXTENSIONS[ext] || null;
  }

  function useFile(file) {
    hideError();
    const type = fileType(file);
    if (!type) {
      showError(`“${file.name}” is not a PNG, JPEG, WebP, GIF or SVG file, so it cannot be searched with.`);
      return;
    }
    const limit = state.info && state.info.limits ? state.info.limits.max_body_bytes : null;
    if (limit && file.size > limit) {
      showError(`“${file.name}” is ${(file.size / 1e6).toFixed(1)} MB; the server accepts files up to ${(limit / 1e6).toFixed(1)} MB.`);
      return;
    }
    dropFile();
    state.strokes = [];
    state.current = null;
    state.file = { blob: file, type: type, name: file.name, url: URL.createObjectURL(file) };
    ui.preview.src = state.file.url;
    ui.preview.alt = `query file ${file.name}`;
    ui.preview.hidden = false;
    ui.fileKind.hidden = !canSearchPhotos();
    requestRedraw();
    changed(true);
  }

  function dropFile() {
    if (!state.file) return;
    URL.revokeObjectURL(state.file.url);
    state.file = null;
    ui.preview.hidden = true;
    ui.preview.removeAttribute("src");
    ui.fileKind.hidden = true;
    document.querySelector("input[name=kind][value=sketch]").checked = true;
  }

  ui.file.addEventListener("change", () => {
    if (ui.file.files && ui.file.files[0]) useFile(ui.file.files[0]);
    ui.file.value = "";
  });

  let dragDepth = 0;
  document.addEventListener("dragenter", (ev) => {
    if (!ev.dataTransfer || !Array.from(ev.dataTransfer.types).includes("Files")) return;
    ev.preventDefault();
    dragDepth++;
    ui.drop.classList.add("dragging");
    ui.dropCover.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) { ui.drop.classList.remove("dragging"); ui.dropCover.hidden = true; }
  });
  document.addEventListener("dragover", (ev) => { ev.preventDefault(); });
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dragDepth = 0;
    ui.drop.classList.remove("dragging");
    ui.dropCover.hidden = true;
    const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (file) useFile(file);
  });

  // ---- search -------------------------------------------------------------------------------------
  function changed(now) {
    if (state.pendingSince === null) state.pendingSince = performance.now();
    clearTimeout(state.timer);
    const waited = performance.now() - state.pendingSince;
    const wait = now ? 0 : Math.max(0, Math.min(DEBOUNCE_MS, MAX_WAIT_MS - waited));
    state.timer = setTimeout(search, wait);
  }

  function galleryModality() {
    return ui.gallery.value || (state.info ? state.info.default_direction.split("2")[1] : "photo");
  }

  function canSearchPhotos() {
    return !!state.info && state.info.directions.includes(`photo2${galleryModality()}`);
  }

  function query() {
    if (state.file) {
      const kind = document.querySelector("input[name=kind]:checked").value;
      return { body: state.file.blob, type: state.file.type, direction: `${kind}2${galleryModality()}` };
    }
    const strokes = state.strokes.slice();
    if (state.current && state.current[0].length) strokes.push(state.current);
    const points = strokes.reduce((n, s) => n + s[0].length, 0);
    if (!strokes.length || points < 2) return null;
    const body = JSON.stringify({ strokes: strokes, canvas: [SIDE, SIDE], stroke_width: state.width });
    return { body: body, type: "application/json", direction: `sketch2${galleryModality()}` };
  }

  async function search() {
    state.timer = null;
    state.pendingSince = null;
    const q = query();
    if (state.controller) state.controller.abort();  // the older request is no longer wanted
    state.controller = null;
    if (!q) {
      showResults(null);
      setStatus("");
      hideError();
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    const seq = ++state.seq;
    const params = new URLSearchParams({ k: ui.k.value, direction: q.direction });
    if (ui.cls.value) params.append("class", ui.cls.value);
    ui.panel.classList.add("busy");
    setStatus("Searching…");
    try {
      const res = await fetch(`search?${params}`, {
        method: "POST", body: q.body, headers: { "Content-Type": q.type }, signal: controller.signal,
      });
      let data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      if (seq !== state.seq) return;
      if (!res.ok) {
        const why = data && data.error ? data.error : `${res.status} ${res.statusText}`;
        showError(`The server refused this query (${res.status}): ${why}`);
        setStatus("");
        return;
      }
      hideError();
      showResults(data);
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (seq !== state.seq) return;
      showError(`Could not reach the server: ${err && err.message ? err.message : err}`);
      setStatus("");
    } finally {
      if (seq === state.seq) {
        ui.panel.classList.remove("busy");
        state.controller = null;
      }
    }
  }

  function showResults(data) {
    ui.results.replaceChildren();
    ui.empty.hidden = !!(data && data.results.length);
    if (!data) {
      ui.empty.textContent = "Start drawing: the photos that match appear here as you draw.";
      return;
    }
    if (!data.results.length) ui.empty.textContent = "No results (is the class filter too narrow?).";
    const higher = data.metric !== "l2";
    for (const hit of data.results) {
      const li = document.createElement("li");
      li.className = "hit";
      li.dataset.class = hit.class_name || "";
      li.dataset.id = hit.id;
      const label = `${hit.class_name || "item"} ${hit.id}, score ${hit.score.toFixed(3)}`;
      if (hit.thumbnail) {
        const img = document.createElement("img");
        img.className = "thumb";
        img.src = hit.thumbnail;
        img.alt = label;
        img.loading = "lazy";
        img.decoding = "async";
        img.addEventListener("error", () => img.replaceWith(placeholder(hit)));
        li.append(img);
      } else {
        li.append(placeholder(hit));
      }
      const cap = document.createElement("div");
      cap.className = "caption";
      const name = document.createElement("span");
      name.className = "cls";
      name.textContent = hit.class_name || hit.id;
      name.title = hit.id;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = hit.score.toFixed(3);
      score.title = higher ? "cosine similarity (higher is closer)" : "distance (lower is closer)";
      cap.append(name, score);
      li.append(cap);
      ui.results.append(li);
    }
    const notes = data.warnings && data.warnings.length ? ` Note: ${data.warnings.join(" ")}` : "";
    setStatus(`${data.results.length} results in ${Math.round(data.took_ms)} ms (${data.direction.replace("2", " → ")}).${notes}`);
    if (notes && state.file && canSearchPhotos()) ui.fileKind.hidden = false;
  }

  function placeholder(hit) {
    const div = document.createElement("div");
    div.className = "no-thumb";
    div.textContent = hit.class_name || hit.id;
    return div;
  }

  function setStatus(text) { ui.status.textContent = text; }
  function announce(text) { setStatus(text); }
  function showError(text) { ui.error.textContent = text; ui.error.hidden = false; }
  function hideError() { ui.error.hidden = true; ui.error.textContent = ""; }

  // ---- the index's info -----------------------------------------------------------------------------
  async function loadInfo() {
    try {
      const res = await fetch("info");
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const info = await res.json();
      state.info = info;
      const idx = info.index, model = info.model;
      const classes = Object.keys(idx.classes || {});
      const built = (idx.updated || idx.created || "").replace("T", " ").replace("+00:00", " UTC");
      ui.info.textContent = `${idx.items.toLocaleString()} items · ${classes.length} classes · model ${model.run} ` +
        `(${model.backbone}, ${model.embed_dim}-d) · ${idx.factory} index built ${built}`;
      for (const name of classes) {
        const opt = document.createElement("option");
        opt.value = name;
        opt.textContent = `${name} (${idx.classes[name]})`;
        ui.cls.append(opt);
      }
      ui.cls.disabled = classes.length === 0;
      const galleries = [...new Set(info.directions.map((d) => d.split("2")[1]))];
      for (const g of galleries) {
        const opt = document.createElement("option");
        opt.value = g;
        opt.textContent = g === "photo" ? "photos" : "sketches";
        ui.gallery.append(opt);
      }
      ui.gallery.value = info.default_direction.split("2")[1];
      ui.galleryLabel.hidden = galleries.length < 2;
      document.body.dataset.ready = "1";
    } catch (err) {
      ui.info.textContent = "Could not read the index's info.";
      showError(`Could not reach the server: ${err && err.message ? err.message : err}`);
    }
  }

  redraw();
  loadInfo();
})();

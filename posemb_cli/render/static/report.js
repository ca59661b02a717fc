// posemb report: draws the views from the JSON data in #report-data. Hand-written, no library, no network.
// Every text from the data is set with textContent (never innerHTML): tokens and texts stay text. Each text that came
// from the user (the text, tokens, model and folder names) sits in its own <bdi> (or its own SVG <text>), so bidi
// controls in it cannot reorder the page, and control characters are shown as their visible pictures (NUL as ␀).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  const LINE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
    "#b5de2b", "#fde725"];
  const RDBU_R = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
    "#d6604d", "#b2182b", "#67001f"];
  const BLANK = [238, 238, 238];  // a value that was not finite: drawn blank, as the PNGs leave it
  const FOLD = 280;  // characters of the text shown before "show all"

  // ------------------------------------------------------------ small helpers

  // control characters (NUL, ESC, ...) as their visible pictures: the text is shown, never acted on; bidi controls
  // balanced, so that a text cannot close the isolation around it (a stray U+2069 or U+202C is dropped, and what
  // the text opens is closed at its end)
  function visible(text) {
    const shown = String(text).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g,
      (c) => (c === "\u007f" ? "\u2421" : String.fromCharCode(0x2400 + c.charCodeAt(0))));
    if (!/[\u202a-\u202e\u2066-\u2069]/.test(shown)) return shown;
    const open = [];
    let out = "";
    for (const c of shown) {
      if ("\u202a\u202b\u202d\u202e".includes(c)) open.push("\u202c");
      else if ("\u2066\u2067\u2068".includes(c)) open.push("\u2069");
      else if (c === "\u202c") {
        if (open[open.length - 1] !== "\u202c") continue;
        open.pop();
      } else if (c === "\u2069") {
        if (!open.includes("\u2069")) continue;
        while (open.pop() !== "\u2069");
      }
      out += c;
    }
    return out + open.reverse().join("");
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // user text: isolated (bidi) and visible
  function user(text, cls) {
    return el("bdi", cls ? { class: cls } : {}, visible(text));
  }

  // a line of our words and user texts ({user: "..."}) into `node`
  function say(node, parts) {
    node.textContent = "";
    for (const part of parts) {
      if (part && typeof part === "object" && "user" in part) node.append(user(part.user, part.cls));
      else node.append(document.createTextNode(String(part)));
    }
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return Number(value).toFixed(digits === undefined ? 4 : digits);
  }

  function short(label, limit) {
    const text = visible(label);
    return text.length > limit ? text.slice(0, Math.max(1, limit - 1)) + "…" : text;
  }

  function clamp(x, low, high) { return Math.min(Math.max(x, low), high); }

  function widthOf(node) {
    return Math.max(280, Math.floor(node.getBoundingClientRect().width || document.documentElement.clientWidth - 32));
  }

  // packed integers (zlib, base64) -> {q, value(k)}: value = offset + scale * q; q = blank: not finite (NaN)
  async function unpack(packed) {
    const binary = atob(packed.zlib);
    const bytes = new Uint8Array(binary.length);
    for (let k = 0; k < binary.length; k++) bytes[k] = binary.charCodeAt(k);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    const raw = new Uint8Array(await new Response(stream).arrayBuffer());
    let q = raw;
    if (packed.bits === 16) {
      q = new Uint16Array(raw.length / 2);
      for (let k = 0; k < q.length; k++) q[k] = raw[2 * k] | (raw[2 * k + 1] << 8);
    }
    const { offset, scale, blank } = packed;
    return { shape: packed.shape, offset, scale, blank, bits: packed.bits, q,
      value(k) { const v = q[k]; return v === blank ? NaN : offset + scale * v; } };
  }

  function hex(colour) {
    return [1, 3, 5].map((k) => parseInt(colour.slice(k, k + 2), 16));
  }

  function colourAt(stops, t) {
    const x = clamp(t, 0, 1) * (stops.length - 1);
    const k = Math.min(Math.floor(x), stops.length - 2);
    const a = hex(stops[k]), b = hex(stops[k + 1]), f = x - k;
    return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f));
  }

  function rgb(stops, value, low, high) {
    if (!Number.isFinite(value)) return "rgb(" + BLANK.join(",") + ")";
    return "rgb(" + colourAt(stops, high > low ? (value - low) / (high - low) : 0.5).join(",") + ")";
  }

  const tables = new Map();  // colour map -> 256 RGB entries, computed once

  function lookup(stops) {
    if (!tables.has(stops)) {
      const table = new Uint8Array(256 * 3);
      for (let k = 0; k < 256; k++) table.set(colourAt(stops, k / 255), 3 * k);
      tables.set(stops, table);
    }
    return tables.get(stops);
  }

  // a rows x cols map drawn one pixel per value into a canvas (scaled up by CSS); NaN drawn blank
  function paint(canvas, rows, cols, valueAt, low, high, stops) {
    canvas.width = cols;
    canvas.height = rows;
    const context = canvas.getContext("2d");
    const image = context.createImageData(cols, rows);
    const span = high > low ? high - low : 1, table = lookup(stops);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const v = valueAt(i, j), p = 4 * (i * cols + j);
        if (Number.isFinite(v)) {
          const k = 3 * Math.round(255 * clamp((v - low) / span, 0, 1));
          image.data[p] = table[k]; image.data[p + 1] = table[k + 1]; image.data[p + 2] = table[k + 2];
        } else {
          image.data[p] = BLANK[0]; image.data[p + 1] = BLANK[1]; image.data[p + 2] = BLANK[2];
        }
        image.data[p + 3] = 255;
      }
    }
    context.putImageData(image, 0, 0);
  }

  function colorbar(stops, low, high, label) {
    const bar = el("div", { class: "colorbar" });
    const canvas = el("canvas", { "aria-hidden": "true" });
    paint(canvas, 1, 64, (i, j) => j / 63, 0, 1, stops);
    bar.append(el("span", {}, fmt(low, 3)), canvas, el("span", {}, fmt(high, 3)), el("span", {}, label));
    return bar;
  }

  // a heatmap canvas of side x side pixels with tick labels on the left and at the bottom
  // ticks: [{at: index, text}] over `count` rows/columns
  function heatmap(canvas, width, height, rowTicks, colTicks, rows, cols, rowLabel, colLabel) {
    const left = 12 + 7 * Math.max(2, ...rowTicks.map((t) => t.text.length)), bottom = 20;
    const frame = el("div", { class: "heatmap", style: "width:" + (left + width) + "px" });
    const ylab = el("div", { class: "ylabels", style: "width:" + left + "px;height:" + height + "px" });
    for (const tick of rowTicks) {
      ylab.append(el("div", { class: tick.cls || "", style: "top:" + ((tick.at + 0.5) * height) / rows + "px" },
        tick.text));
    }
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    const xlab = el("div", { class: "xlabels", style: "margin-left:" + left + "px;width:" + width + "px;height:" +
      bottom + "px" });
    for (const tick of colTicks) {
      xlab.append(el("div", { class: tick.cls || "", style: "left:" + ((tick.at + 0.5) * width) / cols + "px" },
        tick.text));
    }
    const row = el("div", { class: "heatrow" });
    row.append(ylab, canvas);
    frame.append(row, xlab);
    if (colLabel) frame.append(el("div", { class: "axis-label", style: "margin-left:" + left + "px" }, colLabel));
    if (rowLabel) frame.prepend(el("div", { class: "axis-label" }, rowLabel));
    return frame;
  }

  // about `count` ticks at round steps over 0..n-1
  function ticks(n, count) {
    const raw = Math.max(1, n / Math.max(1, count));
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((m) => m >= raw) || raw;
    const out = [];
    for (let at = 0; at < n; at += step) out.push({ at: at, text: String(at) });
    return out;
  }

  function tokenClass(token) {
    return token.kind === "special" ? "tok-special" : token.kind === "unknown" ? "tok-unknown" : "";
  }

  function tokenName(token) {
    return token.kind === "unknown" ? token.label + " ([UNK])" : token.label;
  }

  function scroller(node) {
    const box = el("div", { class: "scroll" });
    box.append(node);
    return box;
  }

  // ------------------------------------------------------------ page frame and tabs

  function header(root) {
    document.title = visible(data.title);
    root.append(say(el("h1"), [{ user: data.title }]));
    if (data.text !== undefined && data.text !== null) {
      const text = el("p", { class: "text", id: "text" });
      say(text, ["“", { user: data.text }, "”"].concat(data.pair !== null && data.pair !== undefined ?
        [" + “", { user: data.pair }, "”"] : []));
      root.append(text);
      const length = data.text.length + (data.pair ? data.pair.length : 0);
      if (length > FOLD) {
        text.classList.add("folded");
        const button = el("button", { type: "button", class: "small fold", "aria-expanded": "false",
          "aria-controls": "text" }, "show the whole text (" + length + " characters)");
        button.addEventListener("click", () => {
          const open = text.classList.toggle("folded") === false;
          button.setAttribute("aria-expanded", String(open));
          button.textContent = open ? "fold the text" : "show the whole text (" + length + " characters)";
        });
        root.append(button);
      }
    }
    if (data.facts.length) {
      const facts = el("div", { class: "facts" });
      for (const [name, value] of data.facts) {
        const fact = el("span", {}, name + " ");
        fact.append(user(value, "fact"));
        facts.append(fact);
      }
      root.append(facts);
    }
    for (const note of data.notes) root.append(say(el("p", { class: "muted note" }), [{ user: note }]));
    for (const warning of data.warnings) root.append(say(el("p", { class: "warning" }), ["warning: ", { user: warning }]));
  }

  const VIEW_NAMES = { head: "head view", model: "model view", positions: "positions", embeddings: "embeddings",
    cka: "layer similarity", lines: "per layer" };
  const DRAW = { head: headView, model: modelView, positions: positionsView, embeddings: embeddingsView,
    report: reportView, cka: ckaView, lines: linesView };

  function tabs(root) {
    const list = el("div", { role: "tablist", "aria-label": "views" });
    root.append(list);
    const buttons = [];
    data.views.forEach((view, k) => {
      const name = view.tab || VIEW_NAMES[view.kind] || view.title || view.kind;
      const button = el("button", { role: "tab", id: "tab-" + k, "aria-controls": "view-" + k,
        "aria-selected": String(k === 0), tabindex: k === 0 ? "0" : "-1", "data-view": view.kind }, name);
      const panel = el("section", { role: "tabpanel", id: "view-" + k, "aria-labelledby": "tab-" + k,
        "data-view": view.kind });
      panel.hidden = k !== 0;
      list.append(button);
      root.append(panel);
      buttons.push(button);
      let drawn = false;
      const show = () => {
        buttons.forEach((b, m) => {
          b.setAttribute("aria-selected", String(m === k));
          b.tabIndex = m === k ? 0 : -1;
          document.getElementById("view-" + m).hidden = m !== k;
        });
        if (!drawn) {
          drawn = true;
          DRAW[view.kind](panel, view.kind === "head" || view.kind === "model" ? data.attention : view);
        }
      };
      button.addEventListener("click", show);
      button.addEventListener("keydown", (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (step) {
          const next = buttons[(k + step + buttons.length) % buttons.length];
          next.focus();
          next.click();
        }
      });
      if (k === 0) show();
    });
  }

  // ------------------------------------------------------------ attention: shared

  function attentionOf(view) {
    const n = data.tokens.length, heads = view.heads.length;
    return (layerIndex, headIndex, i, j) => view.maps[layerIndex].value((headIndex * n + i) * n + j);
  }

  function layerSelect(view, chosen, onChange) {
    const label = el("label", {}, "layer ");
    const select = el("select", { "aria-label": "layer", class: "layer" });
    view.layers.forEach((layer, k) => select.append(el("option", { value: String(k) }, "layer " + layer)));
    select.value = String(chosen);
    select.addEventListener("change", () => onChange(Number(select.value)));
    label.append(select);
    return label;
  }

  // ------------------------------------------------------------ head view

  function headView(panel, view) {
    const weight = attentionOf(view);
    const tokens = data.tokens, n = tokens.length, first = view.first;
    // hover: the pointer; focus: the keyboard; locked: kept (tap, click, Enter or Space) until Escape or another tap
    const state = { layer: first.layer, heads: new Set([first.head]), hover: null, focus: null,
      locked: { side: "query", i: first.token } };
    panel.append(el("p", { class: "muted" }, "Hover, tap or focus a token: lines go to the tokens it attends to " +
      "(left: queries) or from the tokens attending to it (right: keys); opacity = weight. Tap, click, Enter or " +
      "Space keeps a token; Escape lets it go. Shown first: layer " + view.layers[first.layer] + ", head " +
      view.heads[first.head] + ", the head of this layer whose attention between the text's tokens is most " +
      "concentrated."));
    const controls = el("div", { class: "controls" });
    controls.append(layerSelect(view, first.layer, (k) => { state.layer = k; draw(); }));
    const headBox = el("fieldset", { class: "heads" });
    headBox.append(el("legend", { class: "muted" }, "heads (colour per head)"));
    view.heads.forEach((head, k) => {
      const label = el("label", { style: "border-color:" + HEAD_COLOURS[k % HEAD_COLOURS.length] });
      const box = el("input", { type: "checkbox", value: String(k), "data-head": String(head) });
      box.checked = state.heads.has(k);
      box.addEventListener("change", () => { box.checked ? state.heads.add(k) : state.heads.delete(k); draw(); });
      label.append(box, el("span", { class: "swatch", style: "background:" + HEAD_COLOURS[k % HEAD_COLOURS.length] }),
        document.createTextNode(String(head)));
      headBox.append(label);
    });
    const all = el("button", { type: "button", class: "small" }, "all");
    const none = el("button", { type: "button", class: "small" }, "none");
    const setAll = (on) => {
      headBox.querySelectorAll("input").forEach((box) => { box.checked = on; });
      state.heads = new Set(on ? view.heads.map((_, k) => k) : []);
      draw();
    };
    all.addEventListener("click", () => setAll(true));
    none.addEventListener("click", () => setAll(false));
    controls.append(headBox, all, none);
    const readout = el("div", { class: "readout", "aria-live": "polite" });
    panel.append(controls, readout);

    const row = 20, top = 24, weightWidth = 46;
    const svg = svgEl("svg", { class: "headview", role: "group", "aria-label": "head view" });
    panel.append(scroller(svg));
    const available = widthOf(panel);

    let geometry = null;  // x positions of the columns, set by draw()

    // the whole drawing: on a change of layer or heads (the width depends on the number of heads)
    function draw() {
      svg.textContent = "";
      const ww = Math.max(1, state.heads.size) * weightWidth;
      const label = clamp(Math.floor((available - 2 * ww - 90) / 2), 56, 150);
      const lines = clamp(available - 2 * ww - 2 * label - 16, 60, 180);
      const leftX = ww + label, lineFrom = leftX + 8, lineTo = lineFrom + lines, rightX = lineTo + 8;
      const width = rightX + label + ww, height = top + n * row + 8;
      geometry = { leftX, lineFrom, lineTo, rightX, label };
      svg.setAttribute("width", width);
      svg.setAttribute("height", height);
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      svg.append(svgEl("text", { x: leftX, y: 14, "text-anchor": "end", class: "muted" }, "query"));
      svg.append(svgEl("text", { x: rightX, y: 14, class: "muted" }, "key"));
      const chars = Math.max(4, Math.floor(label / 8));
      for (const side of ["query", "key"]) {
        tokens.forEach((token, i) => {
          const y = top + i * row + row / 2;
          const g = svgEl("g", { class: "tok " + tokenClass(token), tabindex: "0", role: "button",
            "data-side": side, "data-i": String(i), "aria-label": side + " " + i + ": " + visible(tokenName(token)) });
          const x = side === "query" ? leftX : rightX;
          g.append(svgEl("rect", { x: side === "query" ? x - label + 4 : x - 4, y: y - row / 2 + 1, width: label,
            height: row - 2, rx: 3, fill: "transparent" }));
          g.append(svgEl("text", { x: x, y: y + 4, "text-anchor": side === "query" ? "end" : "start" },
            short(token.label, chars)));
          g.append(svgEl("title", {}, i + ": " + visible(tokenName(token)) +
            (token.kind === "special" ? " (special)" : "")));
          bindToken(g, side, i);
          svg.append(g);
        });
      }
      svg.append(svgEl("g", { class: "overlay" }));
      overlay();
    }

    // lines, weights and readout of the active token: on every hover, tap or key
    function overlay() {
      const { leftX, lineFrom, lineTo, rightX, label } = geometry;
      const layer = svg.querySelector(".overlay");
      layer.textContent = "";
      const heads = [...state.heads].sort((a, b) => a - b);
      const active = state.hover || state.focus || state.locked;
      svg.querySelectorAll(".tok").forEach((g) => {
        const on = active && g.dataset.side === active.side && Number(g.dataset.i) === active.i;
        g.classList.toggle("active", Boolean(on));
        const kept = state.locked && g.dataset.side === state.locked.side && Number(g.dataset.i) === state.locked.i;
        g.classList.toggle("kept", Boolean(kept));
        g.setAttribute("aria-pressed", String(Boolean(kept)));
      });
      if (!active) {
        readout.textContent = "Hover or tap a token.";
        return;
      }
      const other = active.side === "query" ? "key" : "query";
      const yActive = top + active.i * row + row / 2;
      const shown = [];
      tokens.forEach((token, m) => {
        const i = active.side === "query" ? active.i : m, j = active.side === "query" ? m : active.i;
        const y = top + m * row + row / 2;
        const weights = svgEl("text", { class: "weights", "data-side": other, "data-i": String(m),
          x: other === "key" ? rightX + label : leftX - label, y: y + 4,
          "text-anchor": other === "key" ? "start" : "end" });
        heads.forEach((k) => {
          const w = weight(state.layer, k, i, j), colour = HEAD_COLOURS[k % HEAD_COLOURS.length];
          layer.append(svgEl("line", { x1: lineFrom, x2: lineTo, y1: active.side === "query" ? yActive : y,
            y2: active.side === "query" ? y : yActive, stroke: colour, "stroke-width": 2,
            "stroke-opacity": Number.isFinite(w) ? w : 0, "data-head": String(view.heads[k]) }));
          weights.append(svgEl("tspan", { fill: colour, "data-head": String(view.heads[k]) }, fmt(w) + " "));
          if (Number.isFinite(w)) shown.push([w, k, m]);
        });
        layer.append(weights);
      });
      const parts = ["layer " + view.layers[state.layer] + " · " + active.side + " " + active.i + " ",
        { user: tokenName(tokens[active.i]) }];
      const top3 = shown.sort((a, b) => b[0] - a[0]).slice(0, 3);
      if (!heads.length) parts.push(" · no head chosen");
      top3.forEach(([w, k, m], r) => {
        parts.push((r ? "; " : " · strongest: ") + "head " + view.heads[k] + " → " + m + " ",
          { user: tokenName(tokens[m]) }, " " + fmt(w));
      });
      say(readout, parts);
    }

    function bindToken(g, side, i) {
      const same = (a) => a && a.side === side && a.i === i;
      g.addEventListener("mouseenter", () => { state.hover = { side, i }; overlay(); });
      g.addEventListener("mouseleave", () => { state.hover = null; overlay(); });
      g.addEventListener("focus", () => { state.focus = { side, i }; overlay(); });
      g.addEventListener("blur", () => { if (same(state.focus)) state.focus = null; overlay(); });
      g.addEventListener("click", () => {
        state.locked = same(state.locked) ? null : { side, i };
        overlay();
      });
      g.addEventListener("keydown", (event) => {
        const step = { ArrowDown: 1, ArrowUp: -1 }[event.key];
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();  // Enter keeps the token (it does not toggle: a second Enter keeps it too)
          state.locked = { side, i };
          overlay();
        } else if (event.key === "Escape") {
          state.locked = null;
          overlay();
        } else if (step) {
          event.preventDefault();
          const g2 = svg.querySelector('.tok[data-side="' + side + '"][data-i="' + clamp(i + step, 0, n - 1) + '"]');
          if (g2) g2.focus();
        }
      });
    }

    draw();
  }

  // ------------------------------------------------------------ model view

  // one map pooled to at most `size` x `size` cells (the mean of each block), and its largest cell
  function pooled(view, l, h, size) {
    const n = data.tokens.length, m = Math.min(n, size), map = view.maps[l];
    const sums = new Float64Array(m * m), counts = new Float64Array(m * m);
    const base = h * n * n, q = map.q, blank = map.blank;
    for (let i = 0; i < n; i++) {
      const r = Math.floor((i * m) / n) * m;
      for (let j = 0; j < n; j++) {
        const v = q[base + i * n + j];
        if (v === blank) continue;
        const c = r + Math.floor((j * m) / n);
        sums[c] += map.offset + map.scale * v;
        counts[c] += 1;
      }
    }
    let max = 0;
    for (let c = 0; c < m * m; c++) {
      sums[c] = counts[c] ? sums[c] / counts[c] : NaN;
      if (sums[c] > max) max = sums[c];
    }
    return { m, values: sums, max: max || 1 };
  }

  function modelView(panel, view) {
    const n = data.tokens.length;
    const available = widthOf(panel);
    const heads = view.heads.length;
    const size = clamp(Math.floor((available - 52 - 6 * heads) / heads), 14, 90);
    const pixels = Math.min(n, Math.max(size, 32));  // cells of a small map
    panel.append(el("p", { class: "muted" }, "Every layer × head; rows are queries, columns keys. Each small map " +
      "has its own colour scale (0 to its largest weight)" + (n > pixels ? ", and shows the mean of blocks of about " +
      Math.round(n / pixels) + " × " + Math.round(n / pixels) + " weights" : "") + ". Click one to open it."));
    const grid = el("div", { class: "grid", role: "group", "aria-label": "layers × heads",
      style: "grid-template-columns: 3em repeat(" + view.heads.length + ", " + (size + 2) + "px)" });
    grid.append(el("div", { class: "corner" }, ""));
    view.heads.forEach((head) => grid.append(el("div", { class: "colhead" }, (size > 40 ? "head " : "") + head)));
    const large = el("div", { class: "detail" });
    view.layers.forEach((layer, l) => {
      grid.append(el("div", { class: "rowhead" }, (size > 40 ? "layer " : "L") + layer));
      view.heads.forEach((head, h) => {
        const button = el("button", { type: "button", class: "cell", "aria-pressed": "false",
          "aria-label": "open layer " + layer + " head " + head, "data-layer": String(layer), "data-head": String(head) });
        const canvas = el("canvas", { class: "map", style: "width:" + size + "px;height:" + size + "px" });
        const thumb = pooled(view, l, h, pixels);
        paint(canvas, thumb.m, thumb.m, (i, j) => thumb.values[i * thumb.m + j], 0, thumb.max, VIRIDIS);
        button.append(canvas);
        button.addEventListener("click", () => {
          grid.querySelectorAll("button.cell").forEach((b) => b.setAttribute("aria-pressed", "false"));
          button.setAttribute("aria-pressed", "true");
          openHead(large, view, l, h, available);
        });
        grid.append(button);
      });
    });
    panel.append(scroller(grid), large);
  }

  function openHead(box, view, l, h, available) {
    const weight = attentionOf(view);
    const tokens = data.tokens, n = tokens.length;
    let max = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { const w = weight(l, h, i, j); if (w > max) max = w; }
    max = max || 1;
    box.textContent = "";
    box.append(el("h2", {}, "layer " + view.layers[l] + ", head " + view.heads[h]));
    box.append(colorbar(VIRIDIS, 0, max, "attention weight (0 to this head's largest)"));
    const readout = el("div", { class: "readout", "aria-live": "polite" }, "Point at a cell to read its weight.");
    box.append(readout);
    const chars = 12;
    const side = clamp(available - (12 + 7 * (chars + 4)) - 8, 200, 640);
    const every = Math.max(1, Math.ceil(n / (side / 13)));
    const labelled = tokens.map((token, i) => ({ at: i, text: i + " " + short(token.label, chars),
      cls: tokenClass(token) })).filter((t) => t.at % every === 0);
    const canvas = el("canvas", { class: "map large-map", "data-layer": String(view.layers[l]),
      "data-head": String(view.heads[h]) });
    paint(canvas, n, n, (i, j) => weight(l, h, i, j), 0, max, VIRIDIS);
    const columns = ticks(n, side / 45);
    box.append(scroller(heatmap(canvas, side, side, labelled, columns, n, n, "query ↓", "key →")));
    const read = (event) => {
      const rect = canvas.getBoundingClientRect();
      const i = clamp(Math.floor(((event.clientY - rect.top) / rect.height) * n), 0, n - 1);
      const j = clamp(Math.floor(((event.clientX - rect.left) / rect.width) * n), 0, n - 1);
      say(readout, ["query " + i + " ", { user: tokenName(tokens[i]) }, " → key " + j + " ",
        { user: tokenName(tokens[j]) }, ": " + fmt(weight(l, h, i, j))]);
    };
    canvas.addEventListener("mousemove", read);
    canvas.addEventListener("pointerdown", read);
  }

  // ------------------------------------------------------------ positions

  function positionsView(panel, view) {
    panel.append(el("h2", {}, view.title));
    panel.append(say(el("p", { class: "muted" }), [{ user: view.note }]));
    const stops = view.diverging ? RDBU_R : VIRIDIS;
    panel.append(colorbar(stops, view.low, view.high, view.colorbar));
    const readout = el("div", { class: "readout", "aria-live": "polite" }, "Point at a cell: (i, j, value).");
    panel.append(readout);
    const side = el("div", { class: "side" });
    const available = widthOf(panel);
    for (const entry of view.panels) {
      const map = entry.matrix;
      const n = map.shape[0], m = map.shape[1];
      const figure = el("figure", { style: "margin:0" });
      const shown = Math.min(view.panels.length > 1 ? 300 : 440, available - 50);
      const canvas = el("canvas", { class: "map", "data-panel": entry.name });
      paint(canvas, n, m, (i, j) => map.value(i * m + j), view.low, view.high, stops);
      const read = (event) => {
        const rect = canvas.getBoundingClientRect();
        const i = clamp(Math.floor(((event.clientY - rect.top) / rect.height) * n), 0, n - 1);
        const j = clamp(Math.floor(((event.clientX - rect.left) / rect.width) * m), 0, m - 1);
        say(readout, [{ user: entry.name }, ": (i " + i + ", j " + j + ", value " + fmt(map.value(i * m + j)) + ")"]);
      };
      canvas.addEventListener("mousemove", read);
      canvas.addEventListener("pointerdown", read);
      figure.append(heatmap(canvas, shown, shown, ticks(n, shown / 45), ticks(m, shown / 45), n, m, "position i ↓",
        "position j →"));
      figure.append(say(el("figcaption", { class: "muted" }), entry.name === "mean" ? ["mean over heads"] :
        [{ user: entry.name }, " · rows i, columns j"]));
      side.append(figure);
    }
    if (view.properties.length) {
      side.append(table({ title: "properties of Φ (1 = ideal relative-position Φ; Wang et al., ICLR 2021)",
        columns: ["property", "value"], rows: view.properties }));
    }
    panel.append(side);
    if (view.used) {
      panel.append(el("p", { class: "muted" }, "This text uses positions 0 to " + (view.used - 1) + "."));
    }
    const packed = view.panels[0].matrix;
    panel.append(el("p", { class: "muted" }, "Values are stored as " + packed.bits + "-bit integers from " +
      fmt(view.low) + " in steps of " + packed.scale.toExponential(3) + " (a shown value is within half a step); " +
      "grey cells: values that are not finite."));
  }

  // ------------------------------------------------------------ embeddings

  const PART_COLOURS = { token: "#1f77b4", position: "#ff7f0e", segment: "#2ca02c", sum: "#333333" };

  function embeddingsView(panel, view) {
    const tokens = data.tokens, n = tokens.length, parts = Object.keys(view.parts);
    panel.append(el("h2", {}, "How much position and segment change each token's vector"));
    panel.append(el("p", { class: "muted" }, "Per token: the L2 norms of the token, position and segment vectors " +
      "and of their sum, and cos(token, sum) (1: position and segment change nothing). Position scheme: " +
      view.scheme + "."));
    const legend = el("div", { class: "facts" });
    for (const part of parts) {
      const item = el("span", {});
      item.append(el("span", { class: "swatch", style: "background:" + PART_COLOURS[part] }),
        document.createTextNode(" " + part));
      legend.append(item);
    }
    panel.append(legend);
    const group = Math.max(parts.length * 5 + 6, 14), left = 40, normH = 160, cosH = 70, labelH = 70;
    const width = left + n * group + 10, height = normH + cosH + labelH + 30;
    const svg = svgEl("svg", { class: "bars", width: width, height: height, role: "img",
      "aria-label": "norms and cos(token, sum) per token" });
    const values = parts.flatMap((p) => view.parts[p].filter((v) => v !== null));
    const max = Math.max(...values, 1e-9);
    svg.append(svgEl("text", { x: 2, y: 12, class: "muted", "font-size": 11 }, "L2 norm (max " + fmt(max, 2) + ")"));
    const cosTop = normH + 30;
    svg.append(svgEl("text", { x: 2, y: cosTop - 4, class: "muted", "font-size": 11 }, "cos(token, sum), 0 to 1"));
    tokens.forEach((token, i) => {
      const x0 = left + i * group;
      parts.forEach((part, k) => {
        const v = view.parts[part][i];
        if (v === null) return;
        const h = (v / max) * (normH - 20);
        const bar = svgEl("rect", { x: x0 + 3 + k * 5, y: normH - h + 10, width: 4, height: h,
          fill: PART_COLOURS[part] });
        bar.append(svgEl("title", {}, i + " " + visible(tokenName(token)) + " · " + part + " norm " + fmt(v)));
        svg.append(bar);
      });
      const c = view.cosine[i];
      if (c !== null) {
        const h = Math.max(0, c) * cosH;
        const bar = svgEl("rect", { x: x0 + 3, y: cosTop + cosH - h, width: group - 6, height: h, fill: "#7b3294" });
        bar.append(svgEl("title", {}, i + " " + visible(tokenName(token)) + " · cos(token, sum) " + fmt(c)));
        svg.append(bar);
      }
      const y = cosTop + cosH + 6, x = x0 + group / 2;
      const upright = token.label.length <= 2;  // one CJK character reads better upright, as in the PNG
      svg.append(svgEl("text", { x: x, y: upright ? y + 8 : y, "font-size": 11, class: tokenClass(token),
        "text-anchor": upright ? "middle" : "start", "dominant-baseline": "middle",
        transform: upright ? "" : "rotate(90 " + x + " " + y + ")" }, short(token.label, 10)));
    });
    panel.append(scroller(svg));
    const columns = ["index", "token", ...parts.map((p) => p + " norm"), "cos(token, sum)"];
    const rows = tokens.map((token, i) => [i, { user: tokenName(token) }, ...parts.map((p) => view.parts[p][i]),
      view.cosine[i]]);
    panel.append(table({ title: "per token", columns: columns, rows: rows }));
  }

  // ------------------------------------------------------------ compare: CKA matrices

  function ckaView(panel, view) {
    panel.append(el("p", { class: "muted" }, "Linear CKA (Kornblith et al. 2019) between every layer of one model " +
      "and every layer of the other, on the words both models read: 1 = the same representation up to rotation and " +
      "scale. Row and column 0: the embedding output."));
    const available = widthOf(panel);
    for (const pair of view.pairs) {
      const section = el("section", { class: "pair" });
      section.append(say(el("h2"), [{ user: pair.a }, " × ", { user: pair.b }]));
      section.append(el("p", { class: "muted" }, pair.words + " words" + (pair.note ? " · " + pair.note : "")));
      const [rows, cols] = pair.shape;
      const name = (labels, k) => visible(labels[k] === undefined ? k : labels[k]);
      const tick = (labels, k) => name(labels, k).replace(/^layer /, "").replace(/^embeddings$/, "emb");
      const labelW = 36;
      const cell = clamp(Math.floor((available - labelW - 20) / cols), 10, 48);
      const svg = svgEl("svg", { width: labelW + cols * cell + 4, height: rows * cell + 18, role: "img",
        class: "cka", "aria-label": "CKA matrix" });
      const readout = el("div", { class: "readout", "aria-live": "polite" }, "Point at a cell.");
      const everyRow = Math.max(1, Math.ceil(14 / cell)), everyCol = Math.max(1, Math.ceil(26 / cell));
      for (let i = 0; i < rows; i++) {
        if (i % everyRow === 0) {
          svg.append(svgEl("text", { x: labelW - 4, y: i * cell + cell / 2 + 4, "text-anchor": "end",
            "font-size": 10 }, tick(pair.labels_a, i)));
        }
        for (let j = 0; j < cols; j++) {
          const v = pair.values[i * cols + j];
          const rect = svgEl("rect", { x: labelW + j * cell, y: i * cell, width: cell - 1, height: cell - 1,
            fill: rgb(VIRIDIS, v === null ? NaN : v, 0, 1), "data-i": String(i), "data-j": String(j) });
          const label = name(pair.labels_a, i) + " × " + name(pair.labels_b, j) + ": " + fmt(v === null ? NaN : v, 3);
          rect.append(svgEl("title", {}, label));
          rect.addEventListener("mouseenter", () => { readout.textContent = "CKA " + label; });
          svg.append(rect);
        }
      }
      for (let j = 0; j < cols; j += everyCol) {
        svg.append(svgEl("text", { x: labelW + j * cell + cell / 2, y: rows * cell + 13, "text-anchor": "middle",
          "font-size": 10 }, tick(pair.labels_b, j)));
      }
      const axes = say(el("p", { class: "muted" }), ["rows: layers of ", { user: pair.a }, " (emb: embedding output); " +
        "columns: layers of ", { user: pair.b }]);
      section.append(colorbar(VIRIDIS, 0, 1, "CKA"), readout, scroller(svg), axes);
      panel.append(section);
    }
  }

  // ------------------------------------------------------------ ablate: per-layer lines

  function linesView(panel, view) {
    const available = widthOf(panel);
    const layers = view.layers;
    const legend = el("div", { class: "facts legend" });
    const names = view.charts.length ? view.charts[0].series.map((s) => s.name) : [];
    names.forEach((name, k) => {
      const item = el("span", {});
      item.append(el("span", { class: "swatch", style: "background:" + LINE_COLOURS[k % LINE_COLOURS.length] }),
        document.createTextNode(" "), user(name));
      legend.append(item);
    });
    const xlabel = view.xlabel || "layer";
    panel.append(el("p", { class: "muted" }, view.intro || ("One line per mode, against the layer (embeddings: the " +
      "embedding output). Point at a dot to read it.")), legend);
    const readout = el("div", { class: "readout", "aria-live": "polite" }, "");
    panel.append(readout);
    const charts = el("div", { class: "side" });
    for (const chart of view.charts) {
      const width = clamp(available, 260, 520), height = 200, left = 46, right = 10, top = 10, bottom = 34;
      const values = chart.series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
      let low = Math.min(...values, 0), high = Math.max(...values, chart.ylabel === "mean cosine" ? 1 : 0);
      if (!(high > low)) high = low + 1;
      const x = (k) => left + (layers.length > 1 ? (k * (width - left - right)) / (layers.length - 1) : 0);
      const y = (v) => top + ((high - v) * (height - top - bottom)) / (high - low);
      const svg = svgEl("svg", { width: width, height: height, role: "img", class: "lines",
        "aria-label": chart.title });
      for (let t = 0; t <= 4; t++) {
        const v = low + ((high - low) * t) / 4;
        svg.append(svgEl("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: "#e3e5e8" }));
        svg.append(svgEl("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10 }, fmt(v, 2)));
      }
      const every = Math.max(1, Math.ceil(layers.length / ((width - left) / 40)));
      layers.forEach((layer, k) => {
        if (k % every) return;
        svg.append(svgEl("text", { x: x(k), y: height - bottom + 14, "text-anchor": "middle", "font-size": 10 },
          layer === "embeddings" ? "emb" : layer));
      });
      svg.append(svgEl("text", { x: (left + width) / 2, y: height - 4, "text-anchor": "middle", "font-size": 10,
        class: "muted" }, xlabel));
      chart.series.forEach((series, k) => {
        const colour = LINE_COLOURS[k % LINE_COLOURS.length];
        const points = series.values.map((v, m) => (v === null ? null : [x(m), y(v)]));
        let path = "";
        points.forEach((p, m) => { if (p) path += (path && points[m - 1] ? " L" : " M") + p[0] + " " + p[1]; });
        svg.append(svgEl("path", { d: path.trim(), fill: "none", stroke: colour, "stroke-width": 1.6,
          "data-series": visible(series.name) }));
        points.forEach((p, m) => {
          if (!p) return;
          const dot = svgEl("circle", { cx: p[0], cy: p[1], r: 3, fill: colour, "data-layer": String(layers[m]) });
          const text = visible(series.name) + " · " + xlabel + " " + layers[m] + ": " + fmt(series.values[m], 3);
          dot.append(svgEl("title", {}, text));
          dot.addEventListener("mouseenter", () => { say(readout, [chart.ylabel + " · ", { user: text }]); });
          svg.append(dot);
        });
      });
      const figure = el("figure", { class: "chart" });
      figure.append(el("figcaption", {}, chart.title), svg);
      charts.append(figure);
    }
    panel.append(charts);
  }

  // ------------------------------------------------------------ tables, lines, pictures

  function cellText(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "object" && "user" in value) return visible(value.user);
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : fmt(value);
    return visible(value);
  }

  function sortKey(value) {
    if (typeof value === "number") return value;
    const number = parseFloat(cellText(value).replace(/[%,]/g, ""));
    return Number.isNaN(number) ? null : number;
  }

  let tableCount = 0;  // ids for the tables' titles
  function table(block) {
    // the title sits above the table's scrolling box, not in it: on a phone it wraps at the screen's width
    const node = el("table", { class: "sortable" }), titleId = "table-title-" + (++tableCount);
    const title = block.title ? say(el("p", { class: "caption", id: titleId }), [{ user: block.title }]) : null;
    if (title) node.setAttribute("aria-labelledby", titleId);
    const head = el("thead"), body = el("tbody"), tr = el("tr");
    head.append(tr);
    node.append(head, body);
    let rows = block.rows.slice();
    const fill = () => {
      body.textContent = "";
      for (const row of rows) {
        const line = el("tr");
        row.forEach((value) => {
          const td = el("td", { class: typeof value === "number" ? "" : "str" });
          td.append(typeof value === "number" || value === null ? document.createTextNode(cellText(value)) :
            user(cellText(value)));
          line.append(td);
        });
        body.append(line);
      }
    };
    block.columns.forEach((name, c) => {
      const th = el("th", { scope: "col", "aria-sort": "none" });
      const button = el("button", { type: "button", title: "sort by " + visible(name) });
      button.append(user(name));
      button.addEventListener("click", () => {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        tr.querySelectorAll("th").forEach((other) => other.setAttribute("aria-sort", "none"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const sign = ascending ? 1 : -1;
        rows = block.rows.slice().sort((a, b) => {
          const x = sortKey(a[c]), y = sortKey(b[c]);
          if (x !== null && y !== null) return sign * (x - y);
          if (x === null && y === null) return sign * cellText(a[c]).localeCompare(cellText(b[c]));
          return x === null ? 1 : -1;  // cells without a number last
        });
        fill();
      });
      th.append(button);
      tr.append(th);
    });
    fill();
    if (!title) return scroller(node);
    const box = el("div", {});
    box.append(title, scroller(node));
    return box;
  }

  // one small layers x heads heatmap per statistic (stats), each on its own scale with its colour bar, the value in
  // its tooltip and the readout; then the pattern map of the PNG (one colour per pattern)
  function grids(block, available) {
    const box = el("div", { class: "side grids" });
    const cell = clamp(Math.floor((Math.min(available, 330) - 40) / block.heads), 6, 22);
    const readout = el("div", { class: "readout", "aria-live": "polite" }, "Point at a cell.");
    const headTicks = ticks(block.heads, (block.heads * cell) / 22);
    const layerTicks = ticks(block.layers, (block.layers * cell) / 14);
    const map = (name, colourOf, text) => {
      // the axis title is about 105 px wide at 10 px (class axis-title: the muted colour as a fill, no font size over
      // the attribute's); a map narrower than that starts it at its left edge and widens the picture to hold it
      const left = 26, width = block.heads * cell, height = block.layers * cell, titleW = 110;
      const svg = svgEl("svg", { width: left + Math.max(width, titleW) + 2, height: height + 28, role: "img",
        "aria-label": name + " per layer and head" });
      for (let k = 0; k < block.layers * block.heads; k++) {
        const layer = Math.floor(k / block.heads), head = k % block.heads;
        const rect = svgEl("rect", { x: left + head * cell, y: layer * cell, width: cell - 1, height: cell - 1,
          fill: colourOf(k), "data-layer": String(layer), "data-head": String(head) });
        const label = name + " · layer " + layer + ", head " + head + ": " + text(k);
        rect.append(svgEl("title", {}, label));
        rect.addEventListener("mouseenter", () => { readout.textContent = label; });
        svg.append(rect);
      }
      for (const t of layerTicks) {
        svg.append(svgEl("text", { x: left - 4, y: (t.at + 0.5) * cell + 4, "text-anchor": "end", "font-size": 10 },
          t.text));
      }
      for (const t of headTicks) {
        svg.append(svgEl("text", { x: left + (t.at + 0.5) * cell, y: height + 12, "text-anchor": "middle",
          "font-size": 10 }, t.text));
      }
      const wide = width >= titleW;
      svg.append(svgEl("text", { x: wide ? left + width / 2 : left, y: height + 25,
        "text-anchor": wide ? "middle" : "start", "font-size": 10, class: "axis-title" }, "head (rows: layers)"));
      return svg;
    };
    for (const [name, values] of Object.entries(block.values)) {
      const finite = values.filter((v) => v !== null);
      const low = finite.length ? Math.min(...finite) : 0, high = finite.length ? Math.max(...finite) : 1;
      const figure = el("figure", { "data-statistic": name });
      figure.append(el("figcaption", {}, name));
      figure.append(map(name, (k) => rgb(VIRIDIS, values[k] === null ? NaN : values[k], low, high),
        (k) => fmt(values[k] === null ? NaN : values[k])));
      figure.append(colorbar(VIRIDIS, low, high, ""));
      box.append(figure);
    }
    if (block.pattern) {
      const pattern = block.pattern;
      const figure = el("figure", { "data-statistic": "pattern" });
      figure.append(el("figcaption", {}, pattern.title));
      figure.append(map("pattern", (k) => {
        const at = pattern.labels.indexOf(pattern.values[k]);
        return at < 0 ? "rgb(" + BLANK.join(",") + ")" : pattern.colours[at];
      }, (k) => pattern.values[k] || "–"));
      const legend = el("div", { class: "facts legend" });
      pattern.labels.forEach((label, k) => {
        const item = el("span", {});
        item.append(el("span", { class: "swatch", style: "background:" + pattern.colours[k] }),
          document.createTextNode(" " + label));
        legend.append(item);
      });
      figure.append(legend);
      box.append(figure);
    }
    const section = el("div", {});
    section.append(el("h2", {}, block.title), readout, box);
    return section;
  }

  function reportView(panel, view) {
    const available = widthOf(panel);
    for (const block of view.blocks) {
      if (block.type === "table") panel.append(table(block));
      else if (block.type === "grids") panel.append(grids(block, available));
      else if (block.type === "text" && block.text.trim()) panel.append(say(el("p", { class: "line" }),
        [{ user: block.text }]));
      else if (block.type === "picture") {
        const img = el("img", { class: "picture", alt: block.alt });
        img.src = "data:image/svg+xml;base64," + block.svg;
        panel.append(img);
      }
    }
  }

  // ------------------------------------------------------------ start: inflate the maps, then draw

  async function start() {
    const root = document.getElementById("report");
    const packed = [];
    if (data.attention) data.attention.maps.forEach((map, k) => packed.push([data.attention.maps, k]));
    for (const view of data.views) {
      if (view.kind === "positions") view.panels.forEach((panel) => packed.push([panel, "matrix"]));
    }
    try {
      if (packed.length && typeof DecompressionStream === "undefined") {
        throw new Error("this browser has no DecompressionStream (Chrome 80, Firefox 113, Safari 16.4 or later)");
      }
      const maps = await Promise.all(packed.map(([owner, key]) => unpack(owner[key])));
      packed.forEach(([owner, key], k) => { owner[key] = maps[k]; });
    } catch (error) {
      header(root);
      root.append(el("p", { class: "warning" }, "The maps of this page could not be read: " + error.message));
      document.documentElement.dataset.ready = "error";
      return;
    }
    header(root);
    tabs(root);
    document.documentElement.dataset.readyMs = String(Math.round(performance.now()));  // read by the tests
    document.documentElement.dataset.ready = "true";
  }

  start();
})();

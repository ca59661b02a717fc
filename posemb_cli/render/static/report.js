// posemb report: draws the views from the JSON data in #report-data. Hand-written, no library, no network.
// Every text from the data is set with textContent (never innerHTML): tokens and texts stay text.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
    "#b5de2b", "#fde725"];
  const RDBU_R = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
    "#d6604d", "#b2182b", "#67001f"];

  // ------------------------------------------------------------ small helpers

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "-";
    return Number(value).toFixed(digits === undefined ? 4 : digits);
  }

  function short(label, limit) {
    return label.length > limit ? label.slice(0, limit - 1) + "…" : label;
  }

  // uint16 little-endian integers (base64) with offset and scale: value = offset + scale * q
  function decode(packed) {
    const binary = atob(packed.data);
    const bytes = new Uint8Array(binary.length);
    for (let k = 0; k < binary.length; k++) bytes[k] = binary.charCodeAt(k);
    const view = new DataView(bytes.buffer);
    const q = new Uint16Array(bytes.length / 2);
    for (let k = 0; k < q.length; k++) q[k] = view.getUint16(2 * k, true);
    return { shape: packed.shape, offset: packed.offset, scale: packed.scale, q: q,
      value(index) { return packed.offset + packed.scale * q[index]; } };
  }

  function hex(colour) {
    return [1, 3, 5].map((k) => parseInt(colour.slice(k, k + 2), 16));
  }

  function colourAt(stops, t) {
    const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
    const k = Math.min(Math.floor(x), stops.length - 2);
    const a = hex(stops[k]), b = hex(stops[k + 1]), f = x - k;
    return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f));
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

  // an n x m map drawn one pixel per value into a canvas (scaled up by CSS)
  function paint(canvas, rows, cols, valueAt, low, high, stops) {
    canvas.width = cols;
    canvas.height = rows;
    const context = canvas.getContext("2d");
    const image = context.createImageData(cols, rows);
    const span = high > low ? high - low : 1, table = lookup(stops);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const k = 3 * Math.round(255 * Math.min(Math.max((valueAt(i, j) - low) / span, 0), 1));
        const p = 4 * (i * cols + j);
        image.data[p] = table[k]; image.data[p + 1] = table[k + 1]; image.data[p + 2] = table[k + 2];
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

  function tokenClass(token) {
    return token.kind === "special" ? "tok-special" : token.kind === "unknown" ? "tok-unknown" : "";
  }

  function tokenName(token) {
    return token.kind === "unknown" ? token.label + " ([UNK])" : token.label;
  }

  // ------------------------------------------------------------ page frame and tabs

  function header(root) {
    document.title = data.title;
    root.append(el("h1", {}, data.title));
    if (data.text !== undefined && data.text !== null) {
      const text = el("p", { class: "text" }, "“" + data.text + "”");
      if (data.pair !== null && data.pair !== undefined) text.append(document.createTextNode(" + “" + data.pair + "”"));
      root.append(text);
    }
    if (data.facts.length) {
      const facts = el("div", { class: "facts" });
      for (const [name, value] of data.facts) {
        const fact = el("span", {}, name + " ");
        fact.append(el("b", {}, value));
        facts.append(fact);
      }
      root.append(facts);
    }
    if (data.command) {
      const line = el("p", { class: "muted" }, "made by ");
      line.append(el("code", {}, data.command));
      root.append(line);
    }
    for (const note of data.notes) root.append(el("p", { class: "muted note" }, note));
    for (const warning of data.warnings) root.append(el("p", { class: "warning" }, "warning: " + warning));
  }

  const VIEW_NAMES = { head: "head view", model: "model view", positions: "positions", embeddings: "embeddings" };
  const DRAW = { head: headView, model: modelView, positions: positionsView, embeddings: embeddingsView,
    report: reportView };

  function tabs(root) {
    const list = el("div", { role: "tablist", "aria-label": "views" });
    root.append(list);
    const buttons = [];
    data.views.forEach((view, k) => {
      const name = VIEW_NAMES[view.kind] || view.title || view.kind;
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
          DRAW[view.kind](panel, view.kind === "head" || view.kind === "model" ? data.attention : view);
          drawn = true;
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

  let maps = null;  // the page's attention, decoded once, shared by the head and model views

  function attentionOf(view) {
    maps = maps || decode(view.attention);
    const n = data.tokens.length, heads = view.heads.length;
    return (layerIndex, headIndex, i, j) => maps.value(((layerIndex * heads + headIndex) * n + i) * n + j);
  }

  function layerSelect(view, onChange) {
    const label = el("label", {}, "layer ");
    const select = el("select", { "aria-label": "layer", class: "layer" });
    view.layers.forEach((layer, k) => select.append(el("option", { value: String(k) }, "layer " + layer)));
    select.addEventListener("change", () => onChange(Number(select.value)));
    label.append(select);
    return label;
  }

  // ------------------------------------------------------------ head view

  function headView(panel, view) {
    const weight = attentionOf(view);
    const tokens = data.tokens, n = tokens.length;
    const state = { layer: 0, heads: new Set([0]), active: null, locked: null };
    panel.append(el("p", { class: "muted" }, "Hover, tap or focus a token: lines go to the tokens it attends to " +
      "(left: queries) or from the tokens attending to it (right: keys); opacity = weight. Tap to keep it. " +
      view.rounding + "."));
    const controls = el("div", { class: "controls" });
    controls.append(layerSelect(view, (k) => { state.layer = k; draw(); }));
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
    const weightsWidth = () => Math.max(1, state.heads.size) * weightWidth;
    const svg = svgEl("svg", { class: "headview", role: "group", "aria-label": "head view" });
    const scroller = el("div", { style: "overflow-x:auto" });
    scroller.append(svg);
    panel.append(scroller);

    let geometry = null;  // x positions of the columns, set by draw()

    // the whole drawing: on a change of layer or heads (the width depends on the number of heads)
    function draw() {
      svg.textContent = "";
      const ww = weightsWidth();
      const leftX = ww + 150, lineFrom = leftX + 8, lineTo = lineFrom + 180, rightX = lineTo + 8;
      const width = rightX + 150 + ww, height = top + n * row + 8;
      geometry = { leftX, lineFrom, lineTo, rightX };
      svg.setAttribute("width", width);
      svg.setAttribute("height", height);
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      svg.append(svgEl("text", { x: leftX, y: 14, "text-anchor": "end", class: "muted" }, "query (attending)"));
      svg.append(svgEl("text", { x: rightX, y: 14, class: "muted" }, "key (attended to)"));
      for (const side of ["query", "key"]) {
        tokens.forEach((token, i) => {
          const y = top + i * row + row / 2;
          const g = svgEl("g", { class: "tok " + tokenClass(token), tabindex: "0", role: "button",
            "data-side": side, "data-i": String(i), "aria-label": side + " " + i + ": " + tokenName(token) });
          const x = side === "query" ? leftX : rightX;
          g.append(svgEl("rect", { x: side === "query" ? x - 146 : x - 4, y: y - row / 2 + 1, width: 150,
            height: row - 2, rx: 3, fill: "transparent" }));
          g.append(svgEl("text", { x: x, y: y + 4, "text-anchor": side === "query" ? "end" : "start" },
            short(token.label, 18)));
          g.append(svgEl("title", {}, i + ": " + tokenName(token) + (token.kind === "special" ? " (special)" : "")));
          bindToken(g, side, i);
          svg.append(g);
        });
      }
      svg.append(svgEl("g", { class: "overlay" }));
      overlay();
    }

    // lines, weights and readout of the active token: on every hover, tap or key
    function overlay() {
      const { leftX, lineFrom, lineTo, rightX } = geometry;
      const layer = svg.querySelector(".overlay");
      layer.textContent = "";
      const heads = [...state.heads].sort((a, b) => a - b);
      const active = state.active || state.locked;
      svg.querySelectorAll(".tok").forEach((g) => {
        const on = active && g.dataset.side === active.side && Number(g.dataset.i) === active.i;
        g.classList.toggle("active", Boolean(on));
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
          x: other === "key" ? rightX + 150 : leftX - 150, y: y + 4, "text-anchor": other === "key" ? "start" : "end" });
        heads.forEach((k) => {
          const w = weight(state.layer, k, i, j), colour = HEAD_COLOURS[k % HEAD_COLOURS.length];
          layer.append(svgEl("line", { x1: lineFrom, x2: lineTo, y1: active.side === "query" ? yActive : y,
            y2: active.side === "query" ? y : yActive, stroke: colour, "stroke-width": 2, "stroke-opacity": w,
            "data-head": String(view.heads[k]) }));
          weights.append(svgEl("tspan", { fill: colour, "data-head": String(view.heads[k]) }, fmt(w) + " "));
          shown.push([w, k, m]);
        });
        layer.append(weights);
      });
      const top3 = shown.sort((a, b) => b[0] - a[0]).slice(0, 3)
        .map(([w, k, m]) => "head " + view.heads[k] + " → " + m + " " + tokenName(tokens[m]) + " " + fmt(w));
      readout.textContent = "layer " + view.layers[state.layer] + " · " + active.side + " " + active.i + " " +
        tokenName(tokens[active.i]) + (top3.length ? " · strongest: " + top3.join("; ") : " · no head chosen");
    }

    function bindToken(g, side, i) {
      const same = (a) => a && a.side === side && a.i === i;
      g.addEventListener("mouseenter", () => { state.active = { side, i }; overlay(); });
      g.addEventListener("mouseleave", () => { state.active = null; overlay(); });
      g.addEventListener("focus", () => { if (!state.active) { state.locked = { side, i }; overlay(); } });
      g.addEventListener("click", () => {
        state.locked = same(state.locked) && !state.active ? null : { side, i };
        overlay();
      });
      g.addEventListener("keydown", (event) => {
        const step = { ArrowDown: 1, ArrowUp: -1 }[event.key];
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          state.locked = same(state.locked) ? null : { side, i };
          overlay();
        } else if (step) {
          event.preventDefault();
          focusToken(side, Math.min(Math.max(i + step, 0), n - 1));
        }
      });
    }

    function focusToken(side, i) {
      state.active = null;
      state.locked = { side, i };
      const g = svg.querySelector('.tok[data-side="' + side + '"][data-i="' + i + '"]');
      if (g) g.focus();
      overlay();
    }

    draw();
  }

  // ------------------------------------------------------------ model view

  function modelView(panel, view) {
    const weight = attentionOf(view);
    const tokens = data.tokens, n = tokens.length;
    panel.append(el("p", { class: "muted" }, "Every layer × head; rows are queries, columns keys. Each small map " +
      "has its own colour scale (0 to its largest weight). Click one to open it."));
    const size = Math.max(40, Math.min(90, Math.floor(1000 / (view.heads.length + 1))));
    const grid = el("div", { class: "grid", role: "group", "aria-label": "layers × heads",
      style: "grid-template-columns: 4em repeat(" + view.heads.length + ", " + (size + 2) + "px)" });
    grid.append(el("div", { class: "corner" }, ""));
    view.heads.forEach((head) => grid.append(el("div", { class: "colhead" }, "head " + head)));
    const large = el("div", { class: "detail" });
    view.layers.forEach((layer, l) => {
      grid.append(el("div", { class: "rowhead" }, "layer " + layer));
      view.heads.forEach((head, h) => {
        const button = el("button", { type: "button", class: "cell", "aria-pressed": "false",
          "aria-label": "open layer " + layer + " head " + head, "data-layer": String(layer), "data-head": String(head) });
        const canvas = el("canvas", { class: "map", style: "width:" + size + "px;height:" + size + "px" });
        let max = 0;
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) max = Math.max(max, weight(l, h, i, j));
        paint(canvas, n, n, (i, j) => weight(l, h, i, j), 0, max || 1, VIRIDIS);
        button.append(canvas);
        button.addEventListener("click", () => {
          grid.querySelectorAll("button.cell").forEach((b) => b.setAttribute("aria-pressed", "false"));
          button.setAttribute("aria-pressed", "true");
          openHead(large, view, l, h, max || 1);
        });
        grid.append(button);
      });
    });
    const scroller = el("div", { style: "overflow-x:auto" });
    scroller.append(grid);
    panel.append(scroller, large);
  }

  function openHead(box, view, l, h, max) {
    const weight = attentionOf(view);
    const tokens = data.tokens, n = tokens.length;
    box.textContent = "";
    box.append(el("h2", {}, "layer " + view.layers[l] + ", head " + view.heads[h]));
    box.append(colorbar(VIRIDIS, 0, max, "attention weight (0 to this head's largest)"));
    const readout = el("div", { class: "readout", "aria-live": "polite" }, "Point at a cell to read its weight.");
    box.append(readout);
    const side = Math.min(640, Math.max(260, n * 14));
    const label = Math.max(60, Math.min(160, 8 * Math.max(...tokens.map((t) => short(t.label, 16).length))));
    const frame = el("div", { class: "large", style: "grid-template-columns:" + label + "px " + side + "px" });
    const ylabels = el("div", { class: "ylabels", style: "height:" + side + "px" });
    const canvas = el("canvas", { class: "map large-map", style: "width:" + side + "px;height:" + side + "px",
      "data-layer": String(view.layers[l]), "data-head": String(view.heads[h]) });
    const xlabels = el("div", { class: "xlabels", style: "height:" + label + "px;grid-column:2" });
    const every = Math.max(1, Math.ceil(n / (side / 12)));
    tokens.forEach((token, i) => {
      if (i % every) return;
      const at = ((i + 0.5) * side) / n + "px";
      ylabels.append(el("div", { class: tokenClass(token), style: "top:" + at }, short(token.label, 16)));
      xlabels.append(el("div", { class: tokenClass(token), style: "left:" + at }, short(token.label, 16)));
    });
    paint(canvas, n, n, (i, j) => weight(l, h, i, j), 0, max, VIRIDIS);
    canvas.addEventListener("mousemove", (event) => {
      const rect = canvas.getBoundingClientRect();
      const i = Math.min(n - 1, Math.floor(((event.clientY - rect.top) / rect.height) * n));
      const j = Math.min(n - 1, Math.floor(((event.clientX - rect.left) / rect.width) * n));
      readout.textContent = "query " + i + " " + tokenName(tokens[i]) + " → key " + j + " " + tokenName(tokens[j]) +
        ": " + fmt(weight(l, h, i, j));
    });
    frame.append(ylabels, canvas, xlabels);
    box.append(frame);
  }

  // ------------------------------------------------------------ positions

  function positionsView(panel, view) {
    panel.append(el("h2", {}, view.title));
    panel.append(el("p", { class: "muted" }, view.note));
    const stops = view.diverging ? RDBU_R : VIRIDIS;
    panel.append(colorbar(stops, view.low, view.high, view.colorbar));
    const readout = el("div", { class: "readout", "aria-live": "polite" }, "Point at a cell: (i, j, value).");
    panel.append(readout);
    const side = el("div", { class: "side" });
    for (const entry of view.panels) {
      const map = decode(entry.matrix);
      const n = map.shape[0], m = map.shape[1];
      const figure = el("figure", { style: "margin:0" });
      const shown = view.panels.length > 1 ? 300 : 440;
      const canvas = el("canvas", { class: "map", "data-panel": entry.name,
        style: "width:" + shown + "px;height:" + shown + "px" });
      paint(canvas, n, m, (i, j) => map.value(i * m + j), view.low, view.high, stops);
      canvas.addEventListener("mousemove", (event) => {
        const rect = canvas.getBoundingClientRect();
        const i = Math.min(n - 1, Math.floor(((event.clientY - rect.top) / rect.height) * n));
        const j = Math.min(m - 1, Math.floor(((event.clientX - rect.left) / rect.width) * m));
        readout.textContent = entry.name + ": (i " + i + ", j " + j + ", value " + fmt(map.value(i * m + j)) + ")";
      });
      figure.append(canvas, el("figcaption", { class: "muted" }, entry.name === "mean" ? "mean over heads" :
        entry.name + " · rows i, columns j"));
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
    panel.append(el("p", { class: "muted" }, "Values are stored as integers from " + fmt(view.low) +
      " in steps of " + view.panels[0].matrix.scale.toExponential(3) + " (uint16)."));
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
    const max = Math.max(...parts.flatMap((p) => view.parts[p].filter((v) => v !== null)), 1e-9);
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
        bar.append(svgEl("title", {}, i + " " + tokenName(token) + " · " + part + " norm " + fmt(v)));
        svg.append(bar);
      });
      const c = view.cosine[i];
      if (c !== null) {
        const h = Math.max(0, c) * cosH;
        const bar = svgEl("rect", { x: x0 + 3, y: cosTop + cosH - h, width: group - 6, height: h, fill: "#7b3294" });
        bar.append(svgEl("title", {}, i + " " + tokenName(token) + " · cos(token, sum) " + fmt(c)));
        svg.append(bar);
      }
      const y = cosTop + cosH + 6, x = x0 + group / 2;
      const upright = token.label.length <= 2;  // one CJK character reads better upright, as in the PNG
      svg.append(svgEl("text", { x: x, y: upright ? y + 8 : y, "font-size": 11, class: tokenClass(token),
        "text-anchor": upright ? "middle" : "start", "dominant-baseline": "middle",
        transform: upright ? "" : "rotate(90 " + x + " " + y + ")" }, short(token.label, 10)));
    });
    const scroller = el("div", { style: "overflow-x:auto" });
    scroller.append(svg);
    panel.append(scroller);
    const columns = ["index", "token", ...parts.map((p) => p + " norm"), "cos(token, sum)"];
    const rows = tokens.map((token, i) => [i, tokenName(token), ...parts.map((p) => view.parts[p][i]), view.cosine[i]]);
    panel.append(table({ title: "per token", columns: columns, rows: rows }));
  }

  // ------------------------------------------------------------ tables, lines, pictures

  function cellText(value) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : fmt(value);
    return String(value);
  }

  function sortKey(value) {
    if (typeof value === "number") return value;
    const number = parseFloat(String(value).replace(/[%,]/g, ""));
    return Number.isNaN(number) ? null : number;
  }

  function table(block) {
    const node = el("table", { class: "sortable" });
    if (block.title) node.append(el("caption", {}, block.title));
    const head = el("thead"), body = el("tbody"), tr = el("tr");
    head.append(tr);
    node.append(head, body);
    let rows = block.rows.slice();
    const fill = () => {
      body.textContent = "";
      for (const row of rows) {
        const line = el("tr");
        row.forEach((value) => line.append(el("td", { class: typeof value === "number" ? "" : "str" }, cellText(value))));
        body.append(line);
      }
    };
    block.columns.forEach((name, c) => {
      const th = el("th", { scope: "col", "aria-sort": "none" });
      const button = el("button", { type: "button", title: "sort by " + name }, name);
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
    return node;
  }

  // one small layers x heads heatmap per statistic (stats), each on its own scale, the value in its tooltip
  function grids(block) {
    const box = el("div", { class: "side" });
    const cell = Math.max(8, Math.min(22, Math.floor(260 / block.heads)));
    for (const [name, values] of Object.entries(block.values)) {
      const finite = values.filter((v) => v !== null);
      const low = Math.min(...finite), high = Math.max(...finite);
      const figure = el("figure", { style: "margin:0", "data-statistic": name });
      const svg = svgEl("svg", { width: block.heads * cell + 30, height: block.layers * cell + 4, role: "img",
        "aria-label": name + " per layer and head" });
      values.forEach((v, k) => {
        const layer = Math.floor(k / block.heads), head = k % block.heads;
        const rgb = v === null ? [220, 220, 220] : colourAt(VIRIDIS, high > low ? (v - low) / (high - low) : 0.5);
        const rect = svgEl("rect", { x: 28 + head * cell, y: 2 + layer * cell, width: cell - 1, height: cell - 1,
          fill: "rgb(" + rgb.join(",") + ")", "data-layer": String(layer), "data-head": String(head) });
        rect.append(svgEl("title", {}, name + " · layer " + layer + ", head " + head + ": " + fmt(v)));
        svg.append(rect);
      });
      for (let layer = 0; layer < block.layers; layer++) {
        svg.append(svgEl("text", { x: 24, y: 2 + (layer + 0.7) * cell, "text-anchor": "end", "font-size": 10 },
          "L" + layer));
      }
      figure.append(el("figcaption", { class: "muted" }, name + " (" + fmt(low, 3) + " to " + fmt(high, 3) + ")"));
      figure.append(svg);
      box.append(figure);
    }
    const section = el("div", {});
    section.append(el("h2", {}, block.title), box);
    return section;
  }

  function reportView(panel, view) {
    for (const block of view.blocks) {
      if (block.type === "table") panel.append(table(block));
      else if (block.type === "grids") panel.append(grids(block));
      else if (block.type === "text" && block.text.trim()) panel.append(el("p", { class: "line" }, block.text));
      else if (block.type === "picture") {
        const img = el("img", { class: "picture", alt: block.alt });
        img.src = "data:image/svg+xml;base64," + block.svg;
        panel.append(img);
      }
    }
  }

  const root = document.getElementById("report");
  header(root);
  tabs(root);
})();

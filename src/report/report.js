// sockstorm's HTML report: reads the result documents embedded in the page
// (the application/json script element `sockstorm-results`, written by src/report/mod.rs) and
// draws charts (uPlot, inlined before this script) and tables from them. Nothing is fetched.
// Several documents are a comparison: one series per document, x in seconds from each run's
// start. At the end it writes a self-check into <pre id="selfcheck"> for the headless test
// (scripts/interop/report_chromium.sh).
(function () {
  "use strict";

  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e.type) + (e.filename ? " (" + e.lineno + ":" + e.colno + ")" : ""));
  });
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + String(e.reason));
  });

  var COLORS = ["#1f6fd1", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0c8599", "#c2255c", "#5c940d", "#862e9c", "#a61e4d"];
  // Overlaid documents differ by line style when colour already names something else.
  var DASHES = [[], [8, 4], [2, 3], [12, 3, 2, 3]];
  var charts = [];
  var root = document.getElementById("report");
  var data = JSON.parse(document.getElementById("sockstorm-results").textContent);
  var docs = data.documents;
  var multi = docs.length > 1;

  // ---- small DOM and number helpers ----
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    }
    (kids || []).forEach(function (k) {
      e.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
    });
    return e;
  }
  function add(parent, tag, attrs, kids) { var e = el(tag, attrs, kids); parent.appendChild(e); return e; }
  function note(parent, text) { return add(parent, "p", { "class": "note" }, [text]); }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmtNum(v) {
    if (!isNum(v)) { return v === null || v === undefined ? "–" : String(v); }
    if (Number.isInteger(v)) { return v.toLocaleString("en-US"); }
    return (Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));
  }
  function fmtUs(us) {
    if (!isNum(us)) { return "–"; }
    if (us >= 1e6) { return (us / 1e6).toFixed(us >= 1e7 ? 1 : 2) + " s"; }
    if (us >= 1e3) { return (us / 1e3).toFixed(us >= 1e5 ? 0 : us >= 1e4 ? 1 : 2) + " ms"; }
    return us + " µs";
  }
  function fmtVal(v) {
    if (v === null || v === undefined) { return "–"; }
    if (Array.isArray(v)) { return v.length ? v.map(fmtVal).join(", ") : "[]"; }
    if (typeof v === "object") { return JSON.stringify(v); }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    return isNum(v) ? fmtNum(v) : String(v);
  }
  function color(i) { return COLORS[i % COLORS.length]; }
  function dash(i) { return DASHES[i % DASHES.length]; }
  function short(name) { var s = String(name).split("/"); return s[s.length - 1]; }
  function docLabel(i) { return multi ? short(docs[i].name) : ""; }
  function withDoc(label, i) { return multi ? label + " — " + docLabel(i) : label; }
  function obj(v) { return v && typeof v === "object" && !Array.isArray(v) ? v : null; }

  // A table: headers, rows of cells (a cell is a value, or {v, cls}).
  function table(parent, headers, rows) {
    var t = add(add(parent, "div", { "class": "wide" }), "table");
    var tr = add(add(t, "thead"), "tr");
    headers.forEach(function (h) { add(tr, "th", null, [String(h)]); });
    var body = add(t, "tbody");
    rows.forEach(function (r) {
      var row = add(body, "tr");
      r.forEach(function (c) {
        var cell = c !== null && typeof c === "object" && !Array.isArray(c) && "v" in c ? c : { v: c };
        var cls = cell.cls || (isNum(cell.v) ? "num" : null);
        add(row, "td", cls ? { "class": cls } : null, [typeof cell.v === "string" ? cell.v : fmtVal(cell.v)]);
      });
    });
    return t;
  }
  function docHeaders(first) { return [first].concat(docs.map(function (d) { return short(d.name); })); }

  // Flattens nested objects to [["a.b", scalar], …] for key/value comparison tables.
  function flatten(v, prefix, out) {
    var o = obj(v);
    if (o) {
      Object.keys(o).forEach(function (k) { flatten(o[k], prefix ? prefix + "." + k : k, out); });
    } else if (prefix) {
      out.push([prefix, v]);
    }
    return out;
  }
  // One row per key over all documents, one column per document.
  function compareTable(parent, pick, skip) {
    var keys = [];
    var maps = docs.map(function (d) {
      var m = {};
      flatten(pick(d.doc), "", []).forEach(function (kv) {
        if (skip && skip(kv[0])) { return; }
        if (!(kv[0] in m) && keys.indexOf(kv[0]) < 0) { keys.push(kv[0]); }
        m[kv[0]] = kv[1];
      });
      return m;
    });
    if (!keys.length) { return null; }
    return table(parent, docHeaders("key"), keys.map(function (k) {
      return [k].concat(maps.map(function (m) { return k in m ? m[k] : null; }));
    }));
  }

  // ---- charts ----
  function chartWidth() { return Math.max(640, Math.min(1270, (root.clientWidth || 1270) - 48)); }

  // Joins per-series [xs, ys] onto one sorted x axis (nulls where a series has no point).
  function join(seriesXY) {
    var set = {};
    seriesXY.forEach(function (s) { s[0].forEach(function (x) { set[x] = x; }); });
    var xs = Object.keys(set).map(function (k) { return set[k]; }).sort(function (a, b) { return a - b; });
    var index = {};
    xs.forEach(function (x, i) { index[x] = i; });
    var out = [xs];
    seriesXY.forEach(function (s) {
      var ys = xs.map(function () { return null; });
      s[0].forEach(function (x, i) { ys[index[x]] = s[1][i]; });
      out.push(ys);
    });
    return out;
  }

  // A line chart: series = [{label, xs, ys, stroke, dash, width, fmt}]; opts: yLabel, xLabel,
  // x (uPlot scale options for x), xAxis (axis overrides), yFmt, hooks, note.
  function lineChart(parent, id, title, series, opts) {
    opts = opts || {};
    var joined = join(series.map(function (s) { return [s.xs, s.ys]; }));
    var points = 0;
    joined.slice(1).forEach(function (ys) { ys.forEach(function (y) { if (y !== null && y !== undefined) { points++; } }); });
    var box = add(parent, "div", { "class": "chart", id: id });
    if (opts.note) { note(box, opts.note); }
    var yFmt = opts.yFmt || fmtNum;
    var useries = [{ label: opts.xLabel || "t (s)", value: opts.xValue || function (u, v) { return v === null ? "–" : fmtNum(v); } }];
    series.forEach(function (s) {
      useries.push({
        label: s.label, stroke: s.stroke, width: s.width || 2, dash: s.dash || [],
        spanGaps: true, points: { show: false },
        value: function (u, v) { return v === null || v === undefined ? "–" : yFmt(v); },
      });
    });
    // Time charts start at the run's start, whenever their first sample is.
    var xScale = Object.assign({ time: false, range: function (u, min, max) { return [Math.min(0, min), max > 0 ? max : 1]; } }, opts.x || {});
    var yScale = opts.y || { range: function (u, min, max) { return [0, max > 0 ? max * 1.08 : 1]; } };
    var xAxis = Object.assign({ label: opts.xLabel || "seconds from start", stroke: "#333", grid: { stroke: "#eceff2" } }, opts.xAxis || {});
    var yAxis = { label: opts.yLabel || "", size: 70, stroke: "#333", grid: { stroke: "#eceff2" }, values: function (u, vals) { return vals.map(yFmt); } };
    var u = new uPlot({
      title: title,
      width: chartWidth(),
      height: opts.height || 300,
      scales: { x: xScale, y: yScale },
      series: useries,
      axes: [xAxis, yAxis],
      legend: { live: true },
      cursor: { points: { show: false } },
      hooks: opts.hooks || {},
    }, joined, box);
    charts.push({ id: id, title: title, u: u, points: points });
    return u;
  }

  function timeline(d) { return Array.isArray(d.doc.timeline) ? d.doc.timeline : []; }
  function tsOf(d) { return timeline(d).map(function (s) { return s.t_s; }); }
  function anyTimeline() { return docs.some(function (d) { return timeline(d).length > 0; }); }

  // The planned open-connection count over time: the stages' ramps, else -c (session mode).
  // A segment's document holds its share of the plan: the target is scaled to it.
  function target(d) {
    var doc = d.doc;
    var st = doc.stages && Array.isArray(doc.stages.stages) ? doc.stages.stages : null;
    var share = 1;
    if (obj(doc.segment) && !obj(doc.merged) && isNum(doc.segment.connections) && isNum(doc.settings && doc.settings.connections) && doc.settings.connections > 0) {
      share = doc.segment.connections / doc.settings.connections;
    }
    if (st && st.length) {
      var xs = [0], ys = [0], t = 0, bounds = [];
      st.forEach(function (s) {
        t += s.duration_s;
        xs.push(Math.round(t * 1000) / 1000);
        ys.push(Math.round(s.target * share));
        bounds.push(t);
      });
      return { xs: xs, ys: ys, bounds: bounds, what: "stages" };
    }
    var s = doc.settings || {};
    var n = isNum(s.connections) ? Math.round(s.connections * share) : null;
    if (s.mode === "session" && n !== null && !isNum(s.session_lifetime_s)) {
      var end = isNum(s.duration_s) ? s.duration_s : (isNum(doc.elapsed_s) ? doc.elapsed_s : 1);
      return { xs: [0, end], ys: [n, n], bounds: [], what: "-c" };
    }
    return null;
  }

  function stageLines(u, ds) {
    var ctx = u.ctx;
    ctx.save();
    ctx.lineWidth = 1;
    ctx.setLineDash([3, 4]);
    ds.forEach(function (d) {
      ctx.strokeStyle = color(d.i);
      d.bounds.forEach(function (b, k) {
        if (k === d.bounds.length - 1) { return; }
        var x = Math.round(u.valToPos(b, "x", true)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
      });
    });
    ctx.restore();
  }

  function sumCauses(d) {
    var causes = {};
    timeline(d).forEach(function (s) {
      Object.keys(s.failures_by_cause || {}).forEach(function (c) { causes[c] = true; });
    });
    return Object.keys(causes).sort();
  }

  function sectionHeader(title, text) {
    add(root, "h2", null, [title]);
    if (text) { note(root, text); }
  }

  // ---- the page ---- (an error stops the page, not the self-check that reports it)
  try {
    var names = docs.map(function (d) { return d.name; });
    add(root, "h1", null, ["sockstorm report" + (multi ? ": comparison of " + docs.length + " runs" : "")]);
    var legend = add(root, "p", { "class": "note" });
    docs.forEach(function (d, i) {
      var line = add(legend, "span", null, []);
      add(line, "span", { "class": "swatch", style: "border-color:" + color(i) + (i % DASHES.length ? ";border-top-style:dashed" : "") });
      line.appendChild(document.createTextNode(d.name + (d.doc.run_id ? " (run " + d.doc.run_id + ")" : "") + "   "));
      add(legend, "br");
    });
    note(root, "Made by " + data.tool.name + " " + data.tool.version + " from " + names.length +
      " result document" + (multi ? "s" : "") + (multi ? "; the first is the baseline, each chart has one series per document, x in seconds from each run's start." : "."));

    // Verdict.
    sectionHeader("Verdict", "The run's verdict, in the words of its exit code: ok (0), failures (3), interrupted, thresholds failed (99). A merge says it of the merged data.");
    var vbox = add(root, "p");
    docs.forEach(function (d) {
      var v = d.doc.verdict || "–";
      add(vbox, "span", { "class": "badge " + (v === "ok" ? "pass" : "fail") }, [(multi ? short(d.name) + ": " : "") + v]);
    });
    // The verdict on the generator itself (`generator`: valid, strained or generator-bound,
    // with reasons and each shard's CPU, timer lateness and backlog), where the document has it.
    var gens = docs.filter(function (d) { return obj(d.doc.generator); });
    if (gens.length) {
      add(root, "h3", null, ["Was the load generator the bottleneck?"]);
      var gbox = add(root, "p");
      gens.forEach(function (d) {
        var v = String(d.doc.generator.verdict || "–");
        add(gbox, "span", { "class": "badge " + (v === "valid" ? "pass" : v === "strained" ? "warn" : "fail") }, [(multi ? short(d.name) + ": " : "") + v]);
      });
      gens.forEach(function (d) {
        var g = d.doc.generator;
        var reasons = Array.isArray(g.reasons) ? g.reasons : [];
        var cw = obj(g.compared_with);
        if (reasons.length || cw) {
          var ul = add(root, "ul");
          reasons.forEach(function (r) { add(ul, "li", null, [(multi ? short(d.name) + ": " : "") + fmtVal(r)]); });
          if (cw) { add(ul, "li", null, [(multi ? short(d.name) + ": " : "") + "timer lateness compared with " + cw.histogram + " p99 " + fmtUs(cw.p99_us)]); }
        }
      });
      var shardRows = [];
      gens.forEach(function (d) {
        (Array.isArray(d.doc.generator.shards) ? d.doc.generator.shards : []).forEach(function (sh) {
          var lag = obj(sh.timer_lag) || {};
          shardRows.push([short(d.name), sh.shard, sh.cpu_s, sh.cpu_mean_pct, sh.cpu_wait_mean_pct, sh.busy_max_pct, sh.seconds_saturated, sh.seconds_strained,
            lag.count ? fmtUs(lag.p50_us) : "–", lag.count ? fmtUs(lag.p99_us) : "–", lag.count ? fmtUs(lag.max_us) : "–", fmtVal(sh.backlog)]);
        });
      });
      if (shardRows.length) {
        table(root, ["document", "shard", "CPU s", "CPU mean %", "waiting for a CPU, mean %", "busiest second %", "seconds saturated", "seconds strained",
          "timer lateness p50", "p99", "max", "completion backlog"], shardRows);
      }
    } else {
      note(root, "Whether the load generator itself was the bottleneck: " + (multi ? "these documents carry" : "this document carries") +
        " no generator verdict (written by later versions); the client's own load is in the overview below (connect-schedule lag, client CPU).");
    }

    // A capacity search (`find_max`): its verdict, the value each step held against what it
    // reached, and the step table.
    var searches = docs.filter(function (d) { return obj(d.doc.find_max); });
    if (searches.length) {
      sectionHeader("Capacity search (find-max)", "Each step held one value (connections, or per second) for its hold; a step passed when every objective held on its own measurements and the value was reached. Steps grow by the factor until one fails, then bisect.");
      searches.forEach(function (d, i) {
        var fm = d.doc.find_max;
        var steps = Array.isArray(fm.steps) ? fm.steps : [];
        if (multi) { add(root, "h3", null, [d.name]); }
        var vb = add(root, "p");
        var lim = String(fm.limit || "–");
        add(vb, "span", { "class": "badge " + (lim === "gateway" || lim === "ceiling" ? "pass" : lim === "client" ? "fail" : "warn") }, ["limit: " + lim]);
        add(vb, "span", null, [" max " + (isNum(fm.max) ? fmtNum(fm.max) : "–") + " " + (fm.unit || "") +
          (isNum(fm.knee) ? "; first failing value " + fmtNum(fm.knee) : "") + "; " + steps.length + " steps in " + fmtNum(fm.search_s) + " s"]);
        note(root, "Why: " + fmtVal(fm.cause));
        note(root, "Objectives: " + (Array.isArray(fm.slos) ? fm.slos.join(", ") : "–") +
          (fm.first_failing_slo ? "; first broken at the knee: " + fm.first_failing_slo : ""));
        if (steps.length) {
          var xs = steps.map(function (s, k) { return k + 1; });
          lineChart(root, "chart-find-max-" + i, "Search steps: value asked and reached" + (multi ? " — " + short(d.name) : ""), [
            { label: "value", xs: xs, ys: steps.map(function (s) { return s.value; }), stroke: color(0) },
            { label: "reached", xs: xs, ys: steps.map(function (s) { return s.reached; }), stroke: color(1), dash: [6, 4] },
          ], { xLabel: "step", yLabel: fm.unit || "", x: { time: false, range: function (u, min, max) { return [1, Math.max(2, max)]; } } });
          table(root, ["step", "value", "started s", "secs", "reached", "ok", "objectives", "failures", "generator", "busiest shard %", "why"],
            steps.map(function (s, k) {
              var slos = (Array.isArray(s.slos) ? s.slos : []).map(function (o) { return (o.pass ? "✓ " : "✗ ") + o.expr + " (" + o.shown + ")"; }).join("; ");
              var f = Object.keys(obj(s.failures) || {}).map(function (c) { return c + " " + s.failures[c]; }).join(", ");
              var g = obj(s.generator) || {};
              return [k + 1, s.value, s.started_s, s.duration_s, s.reached, s.pass ? "pass" : "FAIL", slos, f || "–", g.verdict || "–", isNum(g.busy_pct) ? g.busy_pct : "–", s.why || ""];
            }));
        }
      });
    }

    // Overview.
    sectionHeader("Overview");
    function failuresTotal(doc) { var f = obj(doc.failures) || {}; return Object.keys(f).reduce(function (a, k) { return a + (f[k] || 0); }, 0); }
    var rows = [
      ["verdict", function (doc) { return doc.verdict; }],
      ["run id", function (doc) { return doc.run_id; }],
      ["host", function (doc) { return doc.host && doc.host.name; }],
      ["started (UTC)", function (doc) { return doc.host && isNum(doc.host.started_unix_us) ? new Date(doc.host.started_unix_us / 1000).toISOString() : null; }],
      ["elapsed", function (doc) { return isNum(doc.elapsed_s) ? doc.elapsed_s + " s" : null; }],
      ["backend", function (doc) { return doc.backend ? doc.backend.name + " (" + doc.backend.reason + ")" : null; }],
      ["target", function (doc) { return doc.settings && (doc.settings.url + " → " + doc.settings.target); }],
      ["mode", function (doc) { return doc.settings && doc.settings.mode; }],
      ["connections planned", function (doc) { return doc.settings && doc.settings.connections; }],
      ["segment", function (doc) { return obj(doc.segment) ? doc.segment.index + "/" + doc.segment.count + " (" + doc.segment.connections + " connections)" : null; }],
      ["peak open", function (doc) { return doc.process && doc.process.peak_open; }],
      ["attempts", function (doc) { return doc.counters && doc.counters.attempts; }],
      ["established", function (doc) { return doc.counters && doc.counters.established; }],
      ["handshake cycles", function (doc) { return doc.counters && doc.counters.handshake_cycles; }],
      ["failures", function (doc) { return failuresTotal(doc); }],
      ["sessions dropped", function (doc) { return doc.counters && doc.counters.sessions_dropped; }],
      ["messages sent / received / pushed", function (doc) { var c = doc.counters || {}; return fmtNum(c.msgs_sent) + " / " + fmtNum(c.msgs_received) + " / " + fmtNum(c.msgs_pushed); }],
      ["ramp (time until all were open)", function (doc) { return isNum(doc.ramp_s) ? doc.ramp_s + " s" : null; }],
      ["connect-schedule lag, max", function (doc) { return isNum(doc.schedule_lag_max_us) ? fmtUs(doc.schedule_lag_max_us) : null; }],
      ["client CPU (user + sys)", function (doc) { var p = doc.process; return p && isNum(p.cpu_user_s) ? (p.cpu_user_s + p.cpu_sys_s).toFixed(2) + " s" : null; }],
      ["RSS per open connection", function (doc) { var p = doc.process; return p && isNum(p.rss_per_open_connection_bytes) ? p.rss_per_open_connection_bytes + " B" : null; }],
      ["interrupted", function (doc) { return doc.interrupted ? "yes" + (doc.stopped_by ? " (" + doc.stopped_by + ")" : "") : "no"; }],
    ];
    table(root, docHeaders(""), rows.map(function (r) {
      return [r[0]].concat(docs.map(function (d) { var v = r[1](d.doc); return v === undefined ? null : v; }));
    }));

    // Over time.
    sectionHeader("Over time", "Each timeline sample covers one Unix second (the first, the rest of the second the run started in); counts are per sample, i.e. per second.");
    if (!anyTimeline()) {
      note(root, "No timeline in " + (multi ? "these documents" : "this document") + ".");
    } else {
      // Open connections vs target, with the stages.
      var series = [], stageDocs = [];
      docs.forEach(function (d, i) {
        series.push({ label: withDoc("open", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.open; }), stroke: color(i), dash: dash(i) });
        var t = target(d);
        if (t) {
          series.push({ label: withDoc("target (" + t.what + ")", i), xs: t.xs, ys: t.ys, stroke: color(i), dash: [4, 4], width: 1 });
          if (t.bounds.length > 1) { stageDocs.push({ i: i, bounds: t.bounds }); }
        }
      });
      lineChart(root, "chart-open", "Open connections vs target", series, {
        yLabel: "connections",
        note: "Solid: open sessions at each sample. Dashed: the plan's target (the stages' linear ramps, dotted lines at stage ends; else -c)." +
          (docs.some(function (d) { return obj(d.doc.segment) && !obj(d.doc.merged); }) ? " A segment's target is its share of the plan." : ""),
        hooks: stageDocs.length ? { draw: [function (u) { stageLines(u, stageDocs); }] } : {},
      });

      // Connects/s (and reconnects).
      series = [];
      docs.forEach(function (d, i) {
        series.push({ label: withDoc("established/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.established; }), stroke: color(i), dash: dash(i) });
        if (timeline(d).some(function (s) { return s.reconnects > 0; })) {
          series.push({ label: withDoc("reconnects/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.reconnects; }), stroke: color(i), dash: [2, 3], width: 1 });
        }
      });
      lineChart(root, "chart-connects", "Connections established per second", series, { yLabel: "per second" });

      // Failures/s by cause.
      var anyFailures = docs.some(function (d) { return timeline(d).some(function (s) { return s.failures > 0; }); });
      if (anyFailures) {
        series = [];
        var allCauses = [];
        docs.forEach(function (d) { sumCauses(d).forEach(function (c) { if (allCauses.indexOf(c) < 0) { allCauses.push(c); } }); });
        docs.forEach(function (d, i) {
          var causes = sumCauses(d);
          if (!causes.length) {
            series.push({ label: withDoc("failures/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.failures; }), stroke: "#868e96", dash: dash(i) });
          }
          causes.forEach(function (c) {
            series.push({ label: withDoc(c, i), xs: tsOf(d), ys: timeline(d).map(function (s) { return (s.failures_by_cause || {})[c] || 0; }), stroke: COLORS[(allCauses.indexOf(c) + 1) % COLORS.length], dash: dash(i) });
          });
        });
        lineChart(root, "chart-failures", "Failures per second by cause", series, { yLabel: "per second", note: multi ? "Colour: the cause; line style: the document." : null });
      } else {
        note(root, "Failures per second: none in any second" + (multi ? " of any document." : "."));
      }

      // Messages/s.
      if (docs.some(function (d) { return timeline(d).some(function (s) { return s.msgs_received > 0 || s.msgs_pushed > 0; }); })) {
        series = [];
        docs.forEach(function (d, i) {
          if (timeline(d).some(function (s) { return s.msgs_received > 0; })) {
            series.push({ label: withDoc("echoes matched/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.msgs_received; }), stroke: color(i), dash: dash(i) });
          }
          if (timeline(d).some(function (s) { return s.msgs_pushed > 0; })) {
            series.push({ label: withDoc("pushed/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.msgs_pushed; }), stroke: color(i), dash: [2, 3], width: 1.5 });
          }
        });
        lineChart(root, "chart-messages", "Messages received per second", series, { yLabel: "per second", note: "Echoes matched to our messages, and data messages that answered none of ours (pushes, acks, fan-out deliveries)." });
      }

      // Latency over time, per phase: each second's p50 and p99 of every latency measured
      // in it (timeline `latency_us`); documents without it keep only the one-way p99.
      var phases = [];
      docs.forEach(function (d) {
        timeline(d).forEach(function (s) {
          if (obj(s.latency_us)) {
            Object.keys(s.latency_us).forEach(function (k) { if (phases.indexOf(k) < 0) { phases.push(k); } });
          }
        });
      });
      var order = ["tcp_connect", "tls_handshake_full", "tls_handshake_resumed", "ws_upgrade", "ws_connecting", "ws_subscribe_ack", "ws_msg_rtt", "ws_msg_latency", "ws_ping", "ws_heartbeat"];
      phases.sort(function (a, b) { return (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99); });
      var pct = function (d, k, j) {
        return timeline(d).map(function (s) { return obj(s.latency_us) && Array.isArray(s.latency_us[k]) ? s.latency_us[k][j] : null; });
      };
      phases.forEach(function (k) {
        series = [];
        docs.forEach(function (d, i) {
          if (!timeline(d).some(function (s) { return obj(s.latency_us) && s.latency_us[k]; })) { return; }
          series.push({ label: withDoc(k + " p99", i), xs: tsOf(d), ys: pct(d, k, 1), stroke: color(i), dash: dash(i) });
          series.push({ label: withDoc(k + " p50", i), xs: tsOf(d), ys: pct(d, k, 0), stroke: color(i), dash: [2, 3], width: 1 });
        });
        lineChart(root, "chart-latency-" + k, k + ": p50 and p99 per second", series, { yLabel: "latency", yFmt: fmtUs,
          note: k === phases[0] ? "Each second's percentiles of what that second measured (a merge keeps the largest host's: an upper bound). Whole-run distributions: the spectra below." : null });
      });
      var legacy = docs.filter(function (d) {
        return !timeline(d).some(function (s) { return obj(s.latency_us); }) && timeline(d).some(function (s) { return isNum(s.latency_p99_us); });
      });
      if (legacy.length) {
        series = [];
        docs.forEach(function (d, i) {
          if (legacy.indexOf(d) < 0) { return; }
          series.push({ label: withDoc("one-way p99", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return isNum(s.latency_p99_us) ? s.latency_p99_us : null; }), stroke: color(i), dash: dash(i) });
        });
        lineChart(root, "chart-latency", "One-way latency p99 per second", series, { yLabel: "latency", yFmt: fmtUs,
          note: "These documents (an older sockstorm's) keep per second only the one-way latency p99; their phases' whole-run distributions are the spectra below." });
      } else if (!phases.length) {
        note(root, "Latency over time: no second of " + (multi ? "these runs" : "this run") + " measured a latency.");
      }

      // TLS handshakes/s.
      if (docs.some(function (d) { return timeline(d).some(function (s) { return s.tls_full > 0 || s.tls_resumed > 0; }); })) {
        series = [];
        docs.forEach(function (d, i) {
          if (!timeline(d).some(function (s) { return s.tls_full > 0 || s.tls_resumed > 0; })) { return; }
          series.push({ label: withDoc("TLS full/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.tls_full; }), stroke: COLORS[0], dash: dash(i) });
          series.push({ label: withDoc("TLS resumed/s", i), xs: tsOf(d), ys: timeline(d).map(function (s) { return s.tls_resumed; }), stroke: COLORS[2], dash: dash(i) });
        });
        lineChart(root, "chart-tls", "TLS handshakes per second, full and resumed", series, { yLabel: "per second", note: multi ? "Colour: full or resumed; line style: the document." : null });
      }

      // Open by scenario.
      var scen = docs.filter(function (d) { return timeline(d).some(function (s) { return Array.isArray(s.open_by_scenario); }); });
      if (scen.length) {
        series = [];
        docs.forEach(function (d, i) {
          if (!timeline(d).some(function (s) { return Array.isArray(s.open_by_scenario); })) { return; }
          var sc = Array.isArray(d.doc.scenarios) ? d.doc.scenarios : [];
          sc.forEach(function (s, k) {
            series.push({ label: withDoc(s.name || "scenario " + k, i), xs: tsOf(d), ys: timeline(d).map(function (x) { return (x.open_by_scenario || [])[k]; }), stroke: COLORS[(k + 3) % COLORS.length], dash: dash(i) });
          });
        });
        lineChart(root, "chart-scenarios", "Open connections per scenario", series, { yLabel: "connections", note: multi ? "Colour: the scenario; line style: the document." : null });
      }
    }

    // Percentile spectra.
    sectionHeader("Latency percentile spectra", "Each histogram of the whole run: latency against percentile, x = 1/(1−q) on a log scale (HDR plot), computed from the histogram itself (hdr) when the document carries it. The last point is the maximum.");
    var histNames = [];
    docs.forEach(function (d) { Object.keys(d.spectra || {}).forEach(function (h) { if (histNames.indexOf(h) < 0) { histNames.push(h); } }); });
    if (!histNames.length) { note(root, "No histogram holds a sample."); }
    function pctLabel(x) {
      var q = 100 * (1 - 1 / x);
      if (q <= 0) { return "0%"; }
      var s = q.toFixed(Math.max(0, Math.ceil(-Math.log10(100 - q + 1e-9)) + 1));
      return (s.indexOf(".") < 0 ? s : s.replace(/\.?0+$/, "")) + "%";
    }
    histNames.forEach(function (h) {
      var series = [], maxX = 10, fromPct = [];
      docs.forEach(function (d, i) {
        var s = (d.spectra || {})[h];
        if (!s) { return; }
        if (s.source !== "hdr") { fromPct.push(short(d.name)); }
        var xs = s.points.map(function (p) { return 1 / (1 - p[0]); });
        xs.forEach(function (x) { if (x > maxX) { maxX = x; } });
        series.push({ label: withDoc(h + " (" + fmtNum(s.count) + ")", i), xs: xs, ys: s.points.map(function (p) { return p[1]; }), stroke: color(i), dash: dash(i) });
      });
      var top = Math.pow(10, Math.ceil(Math.log10(maxX)));
      lineChart(root, "spectrum-" + h, h + ": percentile spectrum", series, {
        yLabel: "latency", yFmt: fmtUs, height: 280,
        xLabel: "percentile",
        xValue: function (u, v) { return v === null ? "–" : pctLabel(v); },
        x: { distr: 3, log: 10, range: function () { return [1, top]; } },
        xAxis: {
          splits: function () { var s = []; for (var x = 1; x <= top; x *= 10) { s.push(x); } return s; },
          values: function (u, vals) { return vals.map(pctLabel); },
        },
        note: fromPct.length ? "From the percentile fields (no decodable hdr): " + fromPct.join(", ") + "." : null,
      });
    });

    // Histogram table.
    var hrows = [];
    var hkeys = [];
    docs.forEach(function (d) { Object.keys(obj(d.doc.histograms) || {}).forEach(function (h) { if (hkeys.indexOf(h) < 0) { hkeys.push(h); } }); });
    hkeys.forEach(function (h) {
      docs.forEach(function (d) {
        var x = (obj(d.doc.histograms) || {})[h];
        if (!x || !x.count) { return; }
        hrows.push([h, short(d.name), x.count, fmtUs(x.min_us), fmtUs(x.p50_us), fmtUs(x.p90_us), fmtUs(x.p95_us), fmtUs(x.p99_us), fmtUs(x.p999_us), fmtUs(x.max_us), fmtUs(x.mean_us)]);
      });
    });
    if (hrows.length) {
      add(root, "h3", null, ["Histograms"]);
      table(root, ["histogram", "document", "count", "min", "p50", "p90", "p95", "p99", "p99.9", "max", "mean"], hrows);
    }

    // Failures and close codes.
    sectionHeader("Failures by cause and close codes");
    var causes = [], desc = {};
    docs.forEach(function (d) {
      Object.keys(obj(d.doc.failures) || {}).forEach(function (c) { if (causes.indexOf(c) < 0) { causes.push(c); } });
      var fd = obj(d.doc.failure_descriptions) || {};
      Object.keys(fd).forEach(function (c) { if (!desc[c]) { desc[c] = fd[c]; } });
    });
    if (causes.length) {
      table(root, docHeaders("cause").concat(["what it means"]), causes.sort().map(function (c) {
        return [c].concat(docs.map(function (d) { return (obj(d.doc.failures) || {})[c] || 0; })).concat([desc[c] || ""]);
      }));
    } else {
      note(root, "No failures.");
    }
    var codes = [];
    docs.forEach(function (d) { Object.keys(obj(d.doc.close_codes) || {}).forEach(function (c) { if (codes.indexOf(c) < 0) { codes.push(c); } }); });
    if (codes.length) {
      table(root, docHeaders("close code received"), codes.sort().map(function (c) {
        return [c].concat(docs.map(function (d) { return (obj(d.doc.close_codes) || {})[c] || 0; }));
      }));
      note(root, "1000: normal closure; 1006: dropped without a close frame.");
    } else {
      note(root, "No close codes received.");
    }

    // TLS.
    sectionHeader("TLS: full and resumed handshakes");
    if (docs.some(function (d) { return obj(d.doc.tls); })) {
      table(root, docHeaders(""), [
        ["handshakes"].concat(docs.map(function (d) { return d.doc.tls ? d.doc.tls.handshakes : null; })),
        ["full"].concat(docs.map(function (d) { return d.doc.tls ? d.doc.tls.full : null; })),
        ["resumed"].concat(docs.map(function (d) { return d.doc.tls ? d.doc.tls.resumed : null; })),
        ["resumed share"].concat(docs.map(function (d) { return d.doc.tls && isNum(d.doc.tls.resumed_share) ? (100 * d.doc.tls.resumed_share).toFixed(1) + " %" : null; })),
      ]);
      add(root, "h3", null, ["All TLS figures"]);
      compareTable(root, function (doc) { return doc.tls; });
    } else {
      note(root, "No TLS (ws:// target).");
    }

    // Fan-out.
    sectionHeader("Fan-out: broadcast completion");
    if (docs.some(function (d) { return obj(d.doc.fanout); })) {
      note(root, "Per published message, the time until 50 %, 99 % and 100 % of the subscribers owed it had it, as a distribution over messages (p50, p99, max; bucketed within 12.5 %).");
      var frows = [];
      docs.forEach(function (d) {
        var f = obj(d.doc.fanout);
        if (!f) { return; }
        var bc = f.broadcast_completion || {};
        ["to_50pct", "to_99pct", "to_100pct"].forEach(function (k) {
          var x = bc[k];
          frows.push([short(d.name), k.replace("to_", "to ").replace("pct", " %"), x ? fmtUs(x.p50_us) : "–", x ? fmtUs(x.p99_us) : "–", x ? fmtUs(x.max_us) : "–"]);
        });
      });
      table(root, ["document", "completion", "p50", "p99", "max"], frows);
      compareTable(root, function (doc) { return doc.fanout; }, function (k) { return k.indexOf("broadcast_completion.to_") === 0; });
    } else {
      note(root, "No fan-out (no publisher and subscriber scenarios).");
    }

    // Thresholds.
    sectionHeader("Thresholds");
    var exprs = [];
    docs.forEach(function (d) { (Array.isArray(d.doc.thresholds) ? d.doc.thresholds : []).forEach(function (t) { if (exprs.indexOf(t.expr) < 0) { exprs.push(t.expr); } }); });
    if (exprs.length) {
      var th = ["threshold"];
      docs.forEach(function (d) { th.push(short(d.name) + ": actual", short(d.name) + ": result"); });
      table(root, th, exprs.map(function (e) {
        var r = [e];
        docs.forEach(function (d) {
          var t = (d.doc.thresholds || []).filter(function (x) { return x.expr === e; })[0];
          if (!t) { r.push(null, null); return; }
          r.push(t.actual, { v: (t.pass ? "pass" : "FAIL") + (t.unreliable ? " (unreliable: " + t.unreliable_reason + ")" : ""), cls: t.pass ? "pass" : "fail" });
        });
        return r;
      }));
      if (docs.some(function (d) { return d.doc.aborted_by_threshold; })) {
        note(root, "Aborted by a threshold: " + docs.map(function (d) { return short(d.name) + ": " + fmtVal(d.doc.aborted_by_threshold); }).join("; "));
      }
    } else {
      note(root, "No thresholds.");
    }

    // Per scenario.
    sectionHeader("Scenarios");
    var hp = function (s, h, p) { var x = obj(s.histograms) && s.histograms[h]; return x && x.count ? fmtUs(x[p]) : "–"; };
    docs.forEach(function (d) {
      var sc = Array.isArray(d.doc.scenarios) ? d.doc.scenarios : [];
      if (!sc.length) { return; }
      if (multi) { add(root, "h3", null, [d.name]); }
      table(root, ["scenario", "connections", "start", "peak open", "attempts", "established", "failures", "dropped", "msgs sent", "echoes", "pushed",
        "connecting p50", "connecting p99", "RTT p99", "one-way p99", "close codes"], sc.map(function (s) {
        var c = s.counters || {};
        var fails = Object.keys(obj(s.failures) || {}).reduce(function (a, k) { return a + s.failures[k]; }, 0);
        return [s.name, s.connections, isNum(s.start_s) ? s.start_s + " s" : null, s.peak_open, c.attempts, c.established, fails, c.sessions_dropped, c.msgs_sent, c.msgs_received, c.msgs_pushed,
          hp(s, "ws_connecting", "p50_us"), hp(s, "ws_connecting", "p99_us"), hp(s, "ws_msg_rtt", "p99_us"), hp(s, "ws_msg_latency", "p99_us"),
          Object.keys(obj(s.close_codes) || {}).map(function (k) { return k + ": " + s.close_codes[k]; }).join(", ")];
      }));
    });

    // Merges.
    var merges = docs.filter(function (d) { return obj(d.doc.merged) && Array.isArray(d.doc.merged.documents); });
    if (merges.length) {
      sectionHeader("Merged documents", "The runs each merged document was made of, one row per input run.");
      merges.forEach(function (d) {
        if (multi) { add(root, "h3", null, [d.name]); }
        var rowsM = d.doc.merged.documents, keys = [];
        rowsM.forEach(function (r) { Object.keys(r).forEach(function (k) { if (keys.indexOf(k) < 0) { keys.push(k); } }); });
        table(root, keys, rowsM.map(function (r) { return keys.map(function (k) { return k in r ? r[k] : null; }); }));
        var m = d.doc.merged;
        note(root, "partial: " + fmtVal(m.partial) + "; start skew: " + (isNum(m.start_skew_us) ? fmtUs(m.start_skew_us) : "–") + "; missing segments: " + fmtVal(m.missing_segments));
      });
    }

    // Counters, settings, machine.
    sectionHeader("Counters");
    compareTable(root, function (doc) { return doc.counters; });
    sectionHeader("Settings");
    compareTable(root, function (doc) { return doc.settings; });
    sectionHeader("Machine");
    compareTable(root, function (doc) { return doc.machine; });
    if (docs.some(function (d) { return obj(d.doc.process); })) {
      add(root, "h3", null, ["Process"]);
      compareTable(root, function (doc) { return doc.process; });
    }
    if (docs.some(function (d) { return obj(d.doc.clock); })) {
      add(root, "h3", null, ["Clock"]);
      compareTable(root, function (doc) { return doc.clock; });
    }

  } catch (e) {
    errors.push("report.js: " + (e && e.stack ? e.stack : String(e)));
    add(root, "pre", null, ["This report failed to draw: " + String(e)]);
  }

  // ---- self-check, for the headless test ----
  var details = add(root, "details");
  add(details, "summary", null, ["Report self-check"]);
  var pre = add(details, "pre", { id: "selfcheck" }, ["pending"]);
  function selfcheck() {
    var out = charts.map(function (c) {
      var cv = c.u.ctx.canvas;
      var px = c.u.ctx.getImageData(0, 0, cv.width, cv.height).data;
      var nonblank = 0, colored = 0;
      for (var k = 0; k < px.length; k += 4) {
        if (px[k + 3] > 0) {
          nonblank++;
          var r = px[k], g = px[k + 1], b = px[k + 2];
          if (Math.max(r, g, b) - Math.min(r, g, b) > 40) { colored++; }
        }
      }
      return { id: c.id, title: c.title, width: cv.width, height: cv.height, points: c.points, nonblank: nonblank, colored: colored };
    });
    var resources = (performance.getEntriesByType ? performance.getEntriesByType("resource") : []).map(function (e) { return e.name; });
    var ok = errors.length === 0 && resources.length === 0 && out.length > 0 &&
      out.every(function (c) { return c.width > 0 && c.height > 0 && c.points > 0 && c.colored > 0; });
    pre.textContent = JSON.stringify({ ok: ok, documents: docs.length, charts: out, canvases: document.querySelectorAll("canvas").length, errors: errors, resources: resources });
  }
  setTimeout(function () {
    try { selfcheck(); } catch (e) { errors.push(String(e)); pre.textContent = JSON.stringify({ ok: false, errors: errors }); }
  }, 300);
})();

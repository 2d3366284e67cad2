// Refreshes the kafkaworker status page every 2 s from status.json, drawing
// the same markup the server renders (status.html). Without script the page
// reloads itself through <meta refresh>.
(function () {
  "use strict";
  var W = 600, H = 120, SERIES = ["handled", "success", "retry", "dead_letter", "error"];

  function esc(v) {
    return String(v).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function opt(v) { return v === null || v === undefined ? "—" : v; }
  function stamp(t) { return t ? t.replace(/\.\d+Z$/, "Z") : "—"; }
  function secs(s) {
    if (s < 1) return Math.round(s * 1000) + "ms";
    if (s < 60) return (Math.round(s * 10) / 10) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + Math.floor(s % 60) + "s";
    return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
  }
  function rate(r) { return r < 10 ? (Math.round(r * 10) / 10).toString() : Math.round(r).toString(); }
  function state(ok, why) {
    return ok ? '<span class="badge ok">yes</span>' : '<span class="badge bad">no</span> ' + esc(why || "");
  }
  function td(v, num) { return "<td" + (num ? ' class="num"' : "") + ">" + esc(v) + "</td>"; }
  function set(id, html) { var el = document.getElementById(id); if (el) el.innerHTML = html; }

  function worker(w) {
    var rows = [["member id", esc(w.member_id || "—")], ["generation", esc(w.generation)], ["client id", esc(w.client_id)],
      ["version", esc(w.version + " (" + w.go_version + ", sarama " + w.sarama_version + ")")], ["uptime", esc(secs(w.uptime_seconds))],
      ["ready", state(w.ready, w.ready_reason)], ["healthy", state(w.healthy, w.healthy_reason)]];
    return rows.map(function (r) { return "<dt>" + r[0] + "</dt><dd>" + r[1] + "</dd>"; }).join("");
  }
  function totals(t) {
    var c = t.totals;
    return '<li class="s-handled">handled <b id="handled-total">' + c.handled + "</b></li>" +
      '<li class="s-success">success <b>' + c.success + "</b></li>" + '<li class="s-retry">retry <b>' + c.retry + "</b></li>" +
      '<li class="s-dead_letter">dead letter <b>' + c.dead_letter + "</b></li>" + '<li class="s-error">error <b>' + c.error + "</b></li>" +
      '<li class="muted">consumed <b>' + t.consumed + "</b></li>";
  }
  // chart mirrors chartOf in status_http.go: x over the window ending at
  // generated_at, y scaled to the largest rate.
  function chart(s) {
    var rates = s.throughput.rates, end = Date.parse(s.generated_at), win = s.throughput.window_seconds * 1000, max = 0;
    rates.forEach(function (p) { max = Math.max(max, p.handled); });
    var lines = SERIES.map(function (name) {
      var pts = rates.map(function (p) {
        var x = W - (end - Date.parse(p.time)) / win * W, y = max > 0 ? H - 2 - p[name] / max * (H - 18) : H - 2;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      return '<polyline class="s-' + name + '" data-series="' + name + '" points="' + pts.join(" ") + '"></polyline>';
    });
    return lines.join("") + '<text id="chart-max" x="4" y="12" font-size="11">max ' + rate(max) + "/s</text>";
  }
  function partitions(ps) {
    return ps.map(function (p) {
      var age = p.oldest_offset === null ? "—" : secs(p.oldest_age_seconds) + (p.stuck ? " stuck" : "");
      var paused = p.paused ? "paused" : (p.intake_blocked ? "intake held: " + p.intake_blocked : "no");
      return '<tr class="' + (p.stuck ? "stuck" : "") + '" data-topic="' + esc(p.topic) + '" data-partition="' + p.partition + '">' +
        td(p.topic) + td(p.partition, 1) + td(opt(p.committed_offset), 1) + td(p.end_offset, 1) + td(p.lag, 1) + td(p.held, 1) +
        td(p.in_flight, 1) + td(opt(p.oldest_offset), 1) + td(age, 1) + td(paused) + "</tr>";
    }).join("");
  }
  function tiers(ts) {
    if (!ts.length) return '<tr><td colspan="8" class="muted">no retry tiers (RETRY_TOPIC_DELAYS is empty)</td></tr>';
    return ts.map(function (t) {
      return "<tr>" + td(t.source) + td(t.tier, 1) + td(t.topic) + td(secs(t.delay_seconds), 1) + td(t.assigned_partitions, 1) +
        td(t.waiting, 1) + td(t.held, 1) + td(stamp(t.next_due)) + "</tr>";
    }).join("");
  }
  function dest(f) {
    if (f.destination === "retry_tier") return "retry tier " + f.tier + " (" + f.destination_topic + ")";
    if (f.destination === "dead_letter") return "dead letter (" + f.destination_topic + ")";
    return "retried in place";
  }
  function failures(fs) {
    if (!fs.length) return '<tr><td colspan="8" class="muted">no failures</td></tr>';
    return fs.map(function (f) {
      return "<tr>" + td(stamp(f.time)) + td(f.topic) + td(f.partition, 1) + td(f.offset, 1) + td(f.attempt, 1) + td(f.error_type) +
        '<td class="err">' + esc(f.error) + "</td>" + td(dest(f)) + "</tr>";
    }).join("");
  }
  function config(cs) {
    return cs.map(function (c) { return "<tr><th>" + esc(c.name) + "</th>" + td(c.value) + "</tr>"; }).join("");
  }
  function tbody(id, html) { var t = document.querySelector("#" + id + " tbody"); if (t) t.innerHTML = html; }

  function render(s) {
    set("generated", esc(stamp(s.generated_at)));
    set("worker", worker(s.worker));
    set("totals", totals(s.throughput));
    set("chart", chart(s));
    set("partition-count", s.partitions.length);
    tbody("partitions", partitions(s.partitions));
    tbody("tiers", tiers(s.retry_tiers));
    tbody("failures", failures(s.failures));
    tbody("config", config(s.config));
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }
  function refresh() {
    fetch("status.json", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(render)
      .catch(function () { document.body.dataset.stale = "true"; })
      .then(function () { setTimeout(refresh, 2000); });
  }
  setTimeout(refresh, 2000);
})();

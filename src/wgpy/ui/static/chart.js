// The live traffic charts: the only script of the console.  It polls the
// JSON endpoint named by data-traffic and draws two polylines (bytes a
// second received and sent) into each chart's SVG; it also refreshes the
// transfer totals.  Without it, every page still works.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function units(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return i === 0 ? n.toFixed(0) + " " + u[i] : n.toFixed(2) + " " + u[i];
  }

  function draw(svg, data) {
    const box = svg.viewBox.baseVal;
    const w = box.width, h = box.height;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const pts = data.points;
    const t1 = data.now;
    // A young history fills the chart rather than a sliver of its right edge.
    const minSpan = Math.max(20 * data.interval, 20);
    let t0 = t1 - data.window;
    if (pts.length) t0 = Math.max(t0, Math.min(pts[0][0] - data.interval, t1 - minSpan));
    let max = 1;
    for (const p of pts) max = Math.max(max, p[1], p[2]);
    for (const [i, cls] of [[1, "rx"], [2, "tx"]]) {
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("class", cls);
      line.setAttribute("points", pts.map(function (p) {
        const x = Math.max(0, (p[0] - t0) / (t1 - t0)) * w;
        const y = h - 2 - (p[i] / max) * (h - 4);
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" "));
      svg.appendChild(line);
    }
    svg.dataset.max = String(max);
    return max;
  }

  function refresh(root, url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (json) {
        if (!json) return 30;
        const single = root.tagName.toLowerCase() === "svg";
        for (const slug in json.peers) {
          const peer = json.peers[slug];
          const data = { points: peer.points, now: json.now, window: json.window,
                         interval: json.interval };
          const scope = single ? document : root.querySelector('[data-peer="' + slug + '"]');
          if (!scope) continue;
          const svg = single ? root : scope.querySelector("svg.chart");
          if (svg) {
            const max = draw(svg, data);
            const scale = document.getElementById("chart-scale");
            if (single && scale) scale.textContent = "· top of the chart: " + units(max) + "/s";
          }
          for (const f of ["rx", "tx"]) {
            const cell = scope.querySelector('[data-field="' + f + '"]');
            if (cell) cell.textContent = units(peer[f]);
          }
        }
        return Math.min(30, Math.max(1, json.interval));
      })
      .catch(function () { return 30; });
  }

  function start(root) {
    const url = root.dataset.traffic;
    function loop() {
      refresh(root, url).then(function (next) { setTimeout(loop, next * 1000); });
    }
    loop();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-traffic]").forEach(start);
  });
})();

// The console's one script: parts of a page that refresh themselves, and the spend charts.
"use strict";

// An element with data-refresh="URL" is replaced by what URL answers, every few seconds, while the page is
// shown: the traffic table's new calls, a background run's events.
function refresh(el) {
  const every = Number(el.dataset.every || 2000);
  let busy = false;
  async function tick() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const resp = await fetch(el.dataset.refresh, {
        credentials: "same-origin",
        headers: { "x-console-fragment": "1" },
        cache: "no-store",
      });
      if (resp.status === 401) {
        window.location.reload(); // signed out: the page itself goes to the login
        return;
      }
      if (resp.ok) {
        const html = await resp.text();
        if (html !== el.dataset.last) {
          el.dataset.last = html;
          el.innerHTML = html; // rendered by the server's templates, which escape what they insert
        }
      }
    } catch (err) {
      // The gateway is restarting or the network is down: the next tick tries again.
    } finally {
      busy = false;
    }
  }
  setInterval(tick, every);
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#6b7280"];

function chart(el, data) {
  if (!data || !data.series.length) {
    el.textContent = "No spend in this period.";
    el.classList.add("empty");
    return;
  }
  const opts = {
    width: Math.max(320, el.clientWidth),
    height: 220,
    series: [{}].concat(
      data.series.map((s, i) => ({
        label: s.name,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        value: (u, v) => (v == null ? "" : "$" + v.toFixed(6)),
      })),
    ),
    axes: [{}, { values: (u, ticks) => ticks.map((v) => "$" + +v.toPrecision(2)), size: 90 }],
    scales: { x: { time: true } },
  };
  new uPlot(opts, [data.x].concat(data.series.map((s) => s.values)), el);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  const holder = document.getElementById("spend-data");
  if (holder && window.uPlot) {
    const all = JSON.parse(holder.textContent);
    document.querySelectorAll("[data-chart]").forEach((el) => {
      const [period, by] = el.dataset.chart.split(".");
      chart(el, (all[period] || {})[by]);
    });
  }
  // A filter takes effect as soon as it is chosen.
  const filters = document.getElementById("filters");
  if (filters) {
    filters.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => filters.submit()));
  }
});

// pwd-agent ui: log in from a #token= fragment, follow the log (server-sent events), refresh the summary.
// Plain JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

(function login() {
  const hash = window.location.hash;
  if (!hash.startsWith("#token=")) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);  // the token leaves the URL
  const form = document.createElement("form");
  form.method = "post";
  form.action = "/login";
  for (const [name, value] of [["token", decodeURIComponent(hash.slice(7))], ["next", window.location.pathname]]) {
    const input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    form.appendChild(input);
  }
  document.addEventListener("DOMContentLoaded", () => { document.body.appendChild(form); form.submit(); });
})();

document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("summary");
  let pending = null;
  function refresh() {
    if (!summary || pending) return;
    pending = fetch(summary.dataset.src, {cache: "no-store"})
      .then((r) => (r.ok ? r.text() : null))
      .then((html) => { if (html !== null) summary.innerHTML = html; })
      .catch(() => {})
      .finally(() => { pending = null; });
  }
  if (summary) setInterval(() => { if (!document.hidden) refresh(); }, 3000);

  const log = document.getElementById("log");
  if (!log || !window.EventSource) return;
  const box = document.getElementById("log-box");
  const body = log.tBodies[0];
  box.scrollTop = box.scrollHeight;
  const source = new EventSource(log.dataset.stream);
  source.addEventListener("log", (message) => {
    const e = JSON.parse(message.data);
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    const row = body.insertRow();
    row.className = "lvl-" + e.level;
    row.dataset.id = e.id;
    for (const text of [e.time, e.level, e.node, e.message]) row.insertCell().textContent = text;
    while (body.rows.length > 2000) body.deleteRow(0);
    if (atBottom) box.scrollTop = box.scrollHeight;
  });
  source.addEventListener("tick", refresh);
});

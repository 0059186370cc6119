// sweep's dashboard: buttons that call the JSON API (with the session's CSRF token), the
// preview form, the policy editor, and live progress from Server-Sent Events. No build step.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf"]');
  return m ? m.content : "";
}

function say(text, bad) {
  const el = document.getElementById("msg");
  if (!el) return;
  el.textContent = text;
  el.className = bad ? "error" : "ok";
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body || {}),
  });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const why = data && data.error ? data.error : r.status + " " + r.statusText;
    throw new Error(why);
  }
  return data;
}

function then(kind, data) {
  if (kind === "run" && data && data.run_id) { location.href = "/runs/" + data.run_id; return; }
  if (kind === "plan" && data && data.id) { location.href = "/plans/" + data.id; return; }
  if (kind === "show") {
    const out = document.getElementById("result");
    if (out) out.textContent = JSON.stringify(data, null, 2);
    say(data && data.status ? "Done: " + data.status : "Done", false);
    return;
  }
  location.reload();
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-post]");
  if (!b) return;
  ev.preventDefault();
  if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
  let body = b.dataset.body ? JSON.parse(b.dataset.body) : {};
  if (b.dataset.sha) {
    const typed = document.getElementById("confirm-text");
    if (typed && typed.value.trim() !== typed.dataset.expect) {
      say("Type " + typed.dataset.expect + " to confirm.", true);
      typed.focus();
      return;
    }
    body = { sha256: b.dataset.sha };
  }
  b.disabled = true;
  say("Working…", false);
  try {
    then(b.dataset.then, await post(b.dataset.post, body));
  } catch (e) {
    say(e.message, true);
  } finally {
    b.disabled = false;
  }
});

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button.save-policy");
  if (!b) return;
  const row = b.closest("tr");
  const body = {
    data_type: row.dataset.policy,
    retention_days: Number(row.querySelector('input[name="retention_days"]').value),
    enabled: row.querySelector('input[name="enabled"]').checked,
  };
  b.disabled = true;
  try {
    const r = await post("/api/cleanup/policies", body);
    say("Saved " + body.data_type + ": " + r.change, false);
  } catch (e) {
    say(e.message, true);
  } finally {
    b.disabled = false;
  }
});

document.addEventListener("submit", async (ev) => {
  const f = ev.target;
  if (f.id !== "preview-form") return;
  ev.preventDefault();
  const args = f.querySelector("#args").value.trim();
  const body = { command: f.querySelector("#command").value, args: args ? args.split(/\s+/) : [] };
  const b = f.querySelector("button");
  b.disabled = true;
  say("Making the plan (a dry run)…", false);
  try {
    then("plan", await post("/api/plans", body));
  } catch (e) {
    say(e.message, true);
    b.disabled = false;
  }
});

function live() {
  const el = document.getElementById("live");
  if (!el || !window.EventSource) return;
  const bar = document.getElementById("live-bar");
  const text = document.getElementById("live-text");
  let units = 0, done = 0, deleted = 0, failed = 0;
  const show = () => {
    if (units > 0) bar.value = Math.round((100 * done) / units);
    text.textContent = done + " of " + units + " units done, " + deleted + " deleted, " + failed + " failed";
  };
  const es = new EventSource("/api/runs/" + el.dataset.run + "/events");
  es.addEventListener("planned", (e) => { units = JSON.parse(e.data).units; show(); });
  es.addEventListener("batch", (e) => { const d = JSON.parse(e.data); done = d.done_units; units = d.total_units; show(); });
  es.addEventListener("item", (e) => { const d = JSON.parse(e.data); if (d.outcome === "failed") failed++; else deleted++; show(); });
  es.addEventListener("end", () => { es.close(); text.textContent = "finished"; setTimeout(() => location.reload(), 300); });
  es.onerror = () => { es.close(); setTimeout(() => location.reload(), 1000); };
}

document.addEventListener("DOMContentLoaded", live);

// celery-service dashboard: the few things HTML cannot do alone. No build step, no library.
"use strict";

// Kill (and any form with data-confirm) asks before it is sent.
document.addEventListener("submit", (e) => {
  const msg = e.target.dataset && e.target.dataset.confirm;
  if (msg && !window.confirm(msg)) e.preventDefault();
});

// Tasks: the Filter field narrows the rows as one types (the server filters every page).
function setupFilter() {
  const input = document.getElementById("filter");
  const table = document.getElementById("tasks");
  if (!input || !table) return;
  let timer = null;
  let asked = 0;
  input.addEventListener("input", () => {
    const needle = input.value.trim().toLowerCase();
    for (const row of table.tBodies[0].rows) {
      row.hidden = needle !== "" && !row.dataset.task.toLowerCase().includes(needle);
    }
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++asked;
      const url = "/ui/?q=" + encodeURIComponent(input.value);
      const resp = await fetch(url, { credentials: "same-origin" });
      if (!resp.ok || mine !== asked) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      for (const id of ["tasks", "task-count"]) {
        const fresh = doc.getElementById(id);
        if (fresh) document.getElementById(id).replaceWith(fresh);
      }
      const pager = doc.querySelector("nav.pager");
      const old = document.querySelector("nav.pager");
      if (pager && old) old.replaceWith(pager);
      history.replaceState(null, "", url);
    }, 250);
  });
}

// Tasks: each row's last run follows the run events (one stream for the page).
function setupTaskEvents() {
  const table = document.getElementById("tasks");
  if (!table || !table.dataset.live) return;
  const source = new EventSource(table.dataset.live);
  const show = (ev, status, cls, when) => {
    for (const row of document.getElementById("tasks").tBodies[0].rows) {
      if (row.dataset.task !== ev.task) continue;
      const cell = row.querySelector("td.last");
      const link = document.createElement("a");
      link.href = "/ui/runs/" + ev.id;
      const word = document.createElement("span");
      word.className = "outcome " + cls;
      word.textContent = status;
      link.append(word);
      const small = document.createElement("small");
      small.textContent = when;
      cell.replaceChildren(link, document.createElement("br"), small);
    }
  };
  source.addEventListener("started", (e) => show(JSON.parse(e.data), "running", "live", "now"));
  source.addEventListener("ended", (e) => {
    const ev = JSON.parse(e.data);
    show(ev, ev.status, ev.class, "took " + ev.took);
  });
}

function fmtDuration(ms) {
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.floor((ms % 60000) / 1000) + " s";
  return Math.floor(ms / 3600000) + " h " + Math.floor((ms % 3600000) / 60000) + " min";
}

// Running: one event stream for the whole page adds, updates and removes rows.
function setupRunning() {
  const table = document.getElementById("running");
  if (!table) return;
  const body = table.tBodies[0];
  const empty = document.getElementById("running-empty");
  const canAct = table.dataset.canAct === "1";
  const refresh = () => { empty.hidden = body.rows.length > 0; };
  const source = new EventSource(table.dataset.live);
  source.addEventListener("started", (e) => {
    const ev = JSON.parse(e.data);
    if (document.getElementById("run-" + ev.id)) return;
    const tmp = document.createElement("tbody");
    tmp.innerHTML = ev.row;
    const row = tmp.firstElementChild;
    if (!canAct) row.querySelectorAll("form").forEach((f) => f.remove());
    body.prepend(row);
    refresh();
  });
  source.addEventListener("output", (e) => {
    const ev = JSON.parse(e.data);
    const row = document.getElementById("run-" + ev.id);
    if (row) row.querySelector(".latest").textContent = ev.line;
  });
  source.addEventListener("ended", (e) => {
    const row = document.getElementById("run-" + JSON.parse(e.data).id);
    if (row) row.remove();
    refresh();
  });
  setInterval(() => {
    for (const row of body.rows) {
      row.querySelector(".elapsed").textContent = fmtDuration(Date.now() - Number(row.dataset.start));
    }
  }, 1000);
}

// A run's page: its output follows; EventSource resumes at Last-Event-ID after a drop.
function setupOutput() {
  const list = document.getElementById("output");
  if (!list) return;
  const live = list.dataset.live === "1";
  const source = new EventSource(list.dataset.stream);
  source.onmessage = (e) => {
    const page = JSON.parse(e.data);
    for (const line of page.lines) {
      const li = document.createElement("li");
      li.textContent = line.text;
      li.className = line.stream;
      li.title = line.time;
      list.append(li);
    }
    list.scrollTop = list.scrollHeight;
    if (page.done) {
      source.close();
      // The run ended while the page watched: show its final state.
      if (live) setTimeout(() => location.reload(), 300);
    }
  };
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) source.close(); };
}

document.addEventListener("DOMContentLoaded", () => {
  setupFilter();
  setupTaskEvents();
  setupRunning();
  setupOutput();
});

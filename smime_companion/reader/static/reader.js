// The reader's only script: keyboard shortcuts, new mail without a reload, the recipients'
// certificate status while typing, following a sent draft, and the search help. No library,
// no external request: everything it asks for is on this server.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "X-CSRF-Token": csrf } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .catch(function () { return null; });
  }

  // -- the message list: j/k to move, Enter/o to open, click a row -------------------------
  const table = document.querySelector("table.messages");
  const rows = table ? Array.from(table.querySelectorAll("tbody tr[data-href]")) : [];
  let selected = -1;
  function select(i) {
    if (!rows.length) { return; }
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, n) { r.classList.toggle("selected", n === selected); });
    rows[selected].scrollIntoView({ block: "nearest" });
    rows[selected].querySelector("a").focus({ preventScroll: true });
  }
  rows.forEach(function (row) {
    row.addEventListener("click", function (e) {
      if (e.target.closest("a")) { return; }
      window.location.href = row.dataset.href;
    });
  });

  // -- keyboard shortcuts: keys named by data-key on links, plus the list's ---------------
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (e.key === "Escape") { t.blur(); }
      return;
    }
    if (rows.length && (e.key === "j" || e.key === "k")) {
      select(selected + (e.key === "j" ? 1 : -1));
      e.preventDefault();
      return;
    }
    if (rows.length && (e.key === "Enter" || e.key === "o") && selected >= 0) {
      window.location.href = rows[selected].dataset.href;
      e.preventDefault();
      return;
    }
    const target = document.querySelector('[data-key="' + CSS.escape(e.key) + '"]');
    if (!target) { return; }
    e.preventDefault();
    if (target.tagName === "INPUT") { target.focus(); target.select(); } else { target.click(); }
  });

  // -- search help popover ----------------------------------------------------------------
  const help = document.querySelector(".help-toggle");
  if (help) {
    const pop = document.getElementById(help.getAttribute("aria-controls"));
    help.addEventListener("click", function () {
      const open = pop.hidden;
      pop.hidden = !open;
      help.setAttribute("aria-expanded", String(open));
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && !pop.hidden) { pop.hidden = true; help.setAttribute("aria-expanded", "false"); }
    });
  }

  // -- new mail appears without a reload: the list and the folder counts -------------------
  if (table && table.dataset.poll) {
    let newest = table.dataset.newest || "";
    const refresh = function () {
      getJSON(table.dataset.poll).then(function (data) {
        if (!data || data.error) { return; }
        (data.folders || []).forEach(function (f) {
          const link = document.querySelector('[data-folder="' + CSS.escape(f.account + "/" + f.folder) + '"] .count');
          if (link) {
            link.textContent = "";
            if (f.unread) { const b = document.createElement("b"); b.textContent = f.unread; link.append(b, " / "); }
            link.append(String(f.messages));
            link.title = f.unread + " unread of " + f.messages;
          }
        });
        if (data.newest !== null && String(data.newest) !== String(newest)) {
          fetch(window.location.href, { credentials: "same-origin" })
            .then(function (r) { return r.text(); })
            .then(function (html) {
              const doc = new DOMParser().parseFromString(html, "text/html");
              const body = doc.querySelector("table.messages tbody");
              if (body) {
                table.querySelector("tbody").replaceWith(body);
                newest = String(data.newest);
                rows.length = 0;
                Array.from(body.querySelectorAll("tr[data-href]")).forEach(function (row) {
                  rows.push(row);
                  row.addEventListener("click", function (e) {
                    if (!e.target.closest("a")) { window.location.href = row.dataset.href; }
                  });
                });
                selected = -1;
              }
            });
        }
      });
    };
    window.setInterval(refresh, 5000);
  }

  // -- compose: what happens for each recipient, as they are typed --------------------------
  const form = document.querySelector("form.compose");
  if (form) {
    const list = document.getElementById("recipient-status");
    let timer = null;
    const words = { "encrypt": "encrypted", "hold": "held", "sign-only": "sign-only", "split": "held for them" };
    const levels = { "encrypt": "good", "hold": "bad", "sign-only": "warn", "split": "warn" };
    const update = function () {
      const q = new URLSearchParams({ to: form.to.value, cc: form.cc.value, bcc: form.bcc.value });
      getJSON(form.dataset.recipients + "?" + q.toString()).then(function (data) {
        if (!data) { return; }
        list.textContent = "";
        data.forEach(function (s) {
          const li = document.createElement("li");
          li.dataset.address = s.address;
          li.dataset.state = s.state;
          const badge = document.createElement("span");
          badge.className = "badge " + (levels[s.state] || "info");
          badge.textContent = words[s.state] || s.state;
          li.append(badge, " " + s.address + ": " + s.detail);
          list.append(li);
        });
      });
    };
    ["to", "cc", "bcc"].forEach(function (name) {
      form[name].addEventListener("input", function () { window.clearTimeout(timer); timer = window.setTimeout(update, 300); });
    });
    update();
  }

  // -- a sent draft: follow it until it is sent or stopped ---------------------------------
  const progress = document.querySelector("section.progress[data-poll]");
  if (progress) {
    const finished = ["sent", "filed", "gone", "saved", "held", "rejected", "uncertain"];
    const follow = function () {
      getJSON(progress.dataset.poll).then(function (p) {
        if (!p) { return; }
        const stage = document.getElementById("stage");
        stage.textContent = p.stage;
        stage.className = "badge " + (["sent", "filed"].includes(p.stage) ? "good" : (["held", "rejected", "uncertain"].includes(p.stage) ? "bad" : "info"));
        document.getElementById("words").textContent = p.words;
        const reason = document.getElementById("reason");
        reason.textContent = p.reason || "";
        reason.hidden = !p.reason;
        const retry = document.querySelector("form.retry");
        if (retry) { retry.hidden = !(p.can_retry || p.can_send_again); }
        progress.dataset.stage = p.stage;
        if (!finished.includes(p.stage)) { window.setTimeout(follow, 1000); }
      });
    };
    if (!finished.includes(progress.dataset.stage)) { window.setTimeout(follow, 1000); }
  }
})();

// pyriver UI: small enhancements over pages that work without JavaScript.
// No HTML is ever built from strings here (the CSP requires Trusted Types).
(function () {
  "use strict";
  var doc = document;
  var root = doc.documentElement;
  var body = doc.body;
  var base = body.getAttribute("data-base") || "";

  // CSP violations, collected for the browser tests (a violation is also a console error).
  window.__cspViolations = window.__cspViolations || [];
  doc.addEventListener("securitypolicyviolation", function (e) {
    window.__cspViolations.push({ directive: e.violatedDirective, blocked: e.blockedURI });
  });

  function store(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { /* private mode */ }
  }
  function load(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }

  // -- CSRF: htmx requests carry the page's token as a header ---------------------
  var tokenMeta = doc.querySelector('meta[name="csrf-token"]');
  doc.addEventListener("htmx:config:request", function (e) {
    var ctx = e.detail && e.detail.ctx;
    if (ctx && ctx.request && tokenMeta) ctx.request.headers["X-CSRF-Token"] = tokenMeta.content;
  });

  // -- live updates: paused by the user, or while the tab is hidden ------------------
  var liveButton = doc.getElementById("live-toggle");
  var paused = load("pyr-live") === "0";
  function showLive() {
    body.classList.toggle("live-paused", paused);
    if (liveButton) {
      liveButton.setAttribute("aria-pressed", paused ? "false" : "true");
      liveButton.querySelector(".live-label").textContent = paused ? "paused" : "live";
    }
  }
  function toggleLive() {
    paused = !paused;
    store("pyr-live", paused ? "0" : "1");
    showLive();
    if (!paused) htmx.trigger(body, "jobs");
  }
  showLive();
  if (liveButton) liveButton.addEventListener("click", toggleLive);
  doc.addEventListener("htmx:before:request", function (e) {
    var ctx = e.detail && e.detail.ctx;
    var source = ctx && ctx.sourceElement;
    if (source && source.id === "live" && (paused || doc.hidden)) e.preventDefault();
  });
  doc.addEventListener("visibilitychange", function () {
    if (!doc.hidden && !paused && window.htmx) htmx.trigger(body, "jobs");
  });

  // -- theme ---------------------------------------------------------------------------
  var themes = ["auto", "light", "dark"];
  var themeButton = doc.getElementById("theme-toggle");
  function showTheme() {
    if (themeButton) themeButton.querySelector(".theme-label").textContent = root.getAttribute("data-theme");
  }
  function cycleTheme() {
    var next = themes[(themes.indexOf(root.getAttribute("data-theme")) + 1) % themes.length];
    root.setAttribute("data-theme", next);
    store("pyr-theme", next);
    showTheme();
  }
  showTheme();
  if (themeButton) themeButton.addEventListener("click", cycleTheme);

  // -- confirmation dialogs ------------------------------------------------------------
  var dialog = doc.getElementById("confirm");
  function confirmThen(message, onOk) {
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(message)) onOk();
      return;
    }
    doc.getElementById("confirm-text").textContent = message;
    dialog.returnValue = "";
    dialog.addEventListener("close", function once() {
      dialog.removeEventListener("close", once);
      if (dialog.returnValue === "ok") onOk();
    });
    dialog.showModal();
  }
  function hidden(form, name, value) {
    var input = form.querySelector('input[type="hidden"][name="' + name + '"]');
    if (!input) {
      input = doc.createElement("input");
      input.type = "hidden";
      input.name = name;
      form.appendChild(input);
    }
    input.value = value;
  }
  // Capture phase: runs before htmx sees the submit.
  doc.addEventListener("submit", function (e) {
    var form = e.target;
    var button = e.submitter;
    if (button && button.name === "action") hidden(form, "action", button.value);
    var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (!message) return;
    if (form.getAttribute("id") === "bulk") { // not form.id: its "id" inputs shadow it
      var n = form.querySelectorAll('input[name="id"]:checked').length;
      if (n === 0) { e.preventDefault(); e.stopImmediatePropagation(); return; }
      message = message.replace("the selected jobs", n === 1 ? "1 job" : n + " jobs");
    }
    if (form.getAttribute("data-confirmed") === "1") {
      form.removeAttribute("data-confirmed");
      return;
    }
    e.preventDefault();
    e.stopImmediatePropagation();
    confirmThen(message, function () {
      hidden(form, "confirm", "1");
      form.setAttribute("data-confirmed", "1");
      if (button) form.requestSubmit(button); else form.requestSubmit();
    });
  }, true);

  // -- selection: select all, shift-click ranges, the count ------------------------------
  var lastBox = null;
  function boxes() {
    return Array.prototype.slice.call(doc.querySelectorAll('#bulk tbody input[name="id"]'));
  }
  function showCount() {
    var label = doc.querySelector(".sel-count");
    if (!label) return;
    var n = boxes().filter(function (b) { return b.checked; }).length;
    label.textContent = n ? n + " selected:" : "select jobs to act on them:";
  }
  doc.addEventListener("click", function (e) {
    var t = e.target;
    if (!(t instanceof HTMLInputElement) || t.type !== "checkbox") return;
    if (t.id === "select-all") {
      boxes().forEach(function (b) { b.checked = t.checked; });
    } else if (t.name === "id" && t.closest("#bulk")) {
      var all = boxes();
      if (e.shiftKey && lastBox && all.indexOf(lastBox) >= 0) {
        var a = all.indexOf(lastBox), b = all.indexOf(t);
        for (var i = Math.min(a, b); i <= Math.max(a, b); i++) all[i].checked = t.checked;
      }
      lastBox = t;
    }
    showCount();
  });
  doc.addEventListener("htmx:after:swap", showCount);

  // -- copy ---------------------------------------------------------------------------------
  doc.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-copy]");
    if (!button) return;
    var source = doc.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent).then(function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1500);
    });
  });

  // -- times: relative, kept fresh ----------------------------------------------------------
  function duration(s) {
    s = Math.abs(s);
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    var m = Math.round(s / 60);
    if (m < 60) return m + " m";
    var h = Math.floor(m / 60);
    if (h < 24) return h + " h" + (m % 60 ? " " + (m % 60) + " m" : "");
    return Math.floor(h / 24) + " d" + (h % 24 ? " " + (h % 24) + " h" : "");
  }
  function refreshTimes() {
    var now = Date.now();
    doc.querySelectorAll("time[datetime]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (isNaN(at)) return;
      var d = (at - now) / 1000;
      t.textContent = Math.abs(d) < 1 ? "now" : d > 0 ? "in " + duration(d) : duration(d) + " ago";
      t.title = new Date(at).toLocaleString();
    });
  }
  refreshTimes();
  setInterval(refreshTimes, 15000);
  doc.addEventListener("htmx:after:swap", refreshTimes);

  // -- keyboard -----------------------------------------------------------------------------
  var pages = { o: "/", j: "/jobs", q: "/queues", k: "/kinds", e: "/errors", p: "/periodic", c: "/clients", h: "/health" };
  var pendingG = false;
  function rows() {
    return Array.prototype.slice.call(doc.querySelectorAll("table.jobs tbody tr[data-id]"));
  }
  function moveCursor(step) {
    var all = rows();
    if (!all.length) return;
    var i = all.findIndex(function (r) { return r.classList.contains("cursor"); });
    all.forEach(function (r) { r.classList.remove("cursor"); });
    i = i < 0 ? (step > 0 ? 0 : all.length - 1) : Math.max(0, Math.min(all.length - 1, i + step));
    all[i].classList.add("cursor");
    var link = all[i].querySelector("a.open");
    if (link) link.focus();
  }
  function cursorRow() {
    return doc.querySelector("table.jobs tbody tr.cursor");
  }
  doc.addEventListener("keydown", function (e) {
    var t = e.target;
    var typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || (t && t.isContentEditable);
    if (typing) {
      if (e.key === "Escape" && t instanceof HTMLElement) t.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (pendingG) {
      pendingG = false;
      if (pages[e.key]) { e.preventDefault(); window.location.href = base + pages[e.key]; }
      return;
    }
    switch (e.key) {
      case "g": pendingG = true; setTimeout(function () { pendingG = false; }, 1500); break;
      case "/": {
        var field = doc.querySelector(".filters input:not([type=hidden])");
        if (field) { e.preventDefault(); field.focus(); }
        break;
      }
      case "j": moveCursor(1); break;
      case "k": moveCursor(-1); break;
      case "x": {
        var row = cursorRow();
        var box = row && row.querySelector('input[name="id"]');
        if (box) { box.checked = !box.checked; lastBox = box; showCount(); }
        break;
      }
      case "Enter": {
        var r = cursorRow();
        var link = r && r.querySelector("a.open");
        if (link && t === link) break; // the link opens itself
        if (link) { e.preventDefault(); link.click(); }
        break;
      }
      case "r": toggleLive(); break;
      case "t": cycleTheme(); break;
      case "?": {
        var help = doc.getElementById("help");
        if (help && typeof help.showModal === "function" && !help.open) help.showModal();
        break;
      }
    }
  });
  var helpButton = doc.getElementById("help-open");
  if (helpButton) helpButton.addEventListener("click", function () {
    var help = doc.getElementById("help");
    if (help && !help.open) help.showModal();
  });
})();

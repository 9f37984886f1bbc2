// The operator dashboard's only script: live updates and actions without
// reloading. Pages work without it (forms post and redirect back); with it,
// every 1.5 s the page's JSON endpoint (body[data-live-url]) is polled and
// each [data-live] region whose HTML changed is replaced, and action forms
// ([data-action]) are sent with fetch and the answer shown in #flash.
"use strict";
(function () {
  var POLL_MS = 1500;
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var liveUrl = document.body.getAttribute("data-live-url");
  var status = document.getElementById("live-status");
  var flash = document.getElementById("flash");
  var last = {};
  var timer = null;
  var inFlight = false;

  // Each region carries the hash of the HTML the server rendered into it;
  // a region is replaced only when the server's hash changes, so a playing
  // <video> or a half-typed input is left alone while nothing changed.
  document.querySelectorAll("[data-live]").forEach(function (el) {
    last[el.getAttribute("data-live")] = el.getAttribute("data-hash");
  });

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "live-status " + (cls || "");
  }

  function showFlash(text, ok) {
    if (!flash) return;
    flash.textContent = text;
    flash.className = "flash show " + (ok ? "ok" : "bad");
  }

  function toLogin() {
    window.location.href = "/dashboard/login?next=" + encodeURIComponent(window.location.pathname);
  }

  function refresh() {
    if (!liveUrl || inFlight) return;
    inFlight = true;
    fetch(liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (res) {
        if (res.status === 401) { toLogin(); throw new Error("session ended"); }
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (data) {
        Object.keys(data.regions || {}).forEach(function (name) {
          var hash = data.hashes[name];
          if (last[name] === hash) return;
          var el = document.querySelector('[data-live="' + name + '"]');
          if (!el) return;
          el.innerHTML = data.regions[name];
          el.setAttribute("data-hash", hash);
          last[name] = hash;
        });
        if (data.title) document.title = data.title + " · musetalk";
        var t = new Date(data.generated_at);
        setStatus("live · " + t.toISOString().substring(11, 19) + "Z", "ok");
      })
      .catch(function (err) { setStatus("not updating: " + err.message, "bad"); })
      .then(function () { inFlight = false; });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute("data-action")) return;
    ev.preventDefault();
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      body: new URLSearchParams(new FormData(form)),
    })
      .then(function (res) {
        if (res.status === 401) { toLogin(); throw new Error("session ended"); }
        return res.json().then(function (body) { return { ok: res.ok, body: body }; });
      })
      .then(function (r) { showFlash(r.body.message || (r.ok ? "Done." : "Refused."), r.ok && r.body.ok); })
      .catch(function (err) { showFlash("The action failed: " + err.message, false); })
      .then(function () {
        buttons.forEach(function (b) { b.disabled = false; });
        refresh();
      });
  });

  if (liveUrl) {
    refresh();
    timer = setInterval(refresh, POLL_MS);
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { clearInterval(timer); timer = null; }
      else if (!timer) { refresh(); timer = setInterval(refresh, POLL_MS); }
    });
  }
})();

"""The service's small HTML page: start a login, show it pending, then show its result.

Kept as Python strings (not package data files) so that any installation of jpki serves it.
The script is a separate resource so the page can run under ``Content-Security-Policy:
default-src 'self'``. It only ever shows what the board holds: a pending challenge's id and
expiry, then ok + account key or the reason code — never personal data.
"""

from __future__ import annotations

from typing import Final

__all__ = ["INDEX_HTML", "PAGE_JS"]

INDEX_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in with My Number Card</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }
 code, pre { background: #f3f3f3; padding: .15rem .3rem; border-radius: 3px; }
 pre { padding: .6rem; overflow-x: auto; }
 .ok { color: #0a6b2d; } .refused { color: #a31515; } .muted { color: #666; }
 button { font-size: 1rem; padding: .4rem 1rem; }
</style>
</head>
<body>
<h1>Log in with My Number Card</h1>
<p class="muted">Relying party <code id="rp">…</code></p>
<p><button id="start">Start a login</button></p>
<section id="pending" hidden>
 <h2>Pending login</h2>
 <p>Challenge <code id="cid"></code>, expires <span id="expires"></span>
  (<span id="left"></span> s left).</p>
 <p>With the card in the reader (or the emulator served over PC/SC), run:</p>
 <pre id="command"></pre>
</section>
<section id="result" hidden>
 <h2>Result</h2>
 <p id="verdict"></p>
</section>
<script src="page.js"></script>
</body>
</html>
"""

PAGE_JS: Final = """"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let timer = null;
  fetch("api/info").then((r) => r.json()).then((info) => { $("rp").textContent = info.rp_id; });

  function show(el, on) { el.hidden = !on; }

  async function poll(challenge) {
    const left = Math.round((Date.parse(challenge.expires_at) - Date.now()) / 1000);
    $("left").textContent = Math.max(0, left);
    const r = await fetch("api/challenges/" + encodeURIComponent(challenge.id) + "/result");
    if (r.status === 404) { finish({ ok: false, reason: "expired", message: "the challenge is gone" }); return; }
    const doc = await r.json();
    if (doc.state === "done") { finish(doc.result); }
  }

  function finish(result) {
    clearInterval(timer);
    show($("pending"), false);
    show($("result"), true);
    const verdict = $("verdict");
    if (result.ok) {
      verdict.className = "ok";
      verdict.textContent = "Logged in: account " + result.account + " (certificate " + result.serial + ")";
    } else {
      verdict.className = "refused";
      verdict.textContent = "Refused: " + result.reason + " \u2014 " + result.message;
    }
    $("start").disabled = false;
  }

  $("start").addEventListener("click", async () => {
    $("start").disabled = true;
    show($("result"), false);
    const r = await fetch("api/login/begin", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ display: true }) });
    const challenge = await r.json();
    if (!r.ok) { finish({ ok: false, reason: challenge.reason, message: challenge.message }); return; }
    $("cid").textContent = challenge.id;
    $("expires").textContent = new Date(challenge.expires_at).toLocaleTimeString();
    const base = location.origin + location.pathname.replace(/[^/]*$/, "");
    $("command").textContent = "jpki login " + base.replace(/\\/$/, "") + " --challenge " + challenge.id;
    show($("pending"), true);
    timer = setInterval(() => poll(challenge), 1000);
    poll(challenge);
  });
})();
"""

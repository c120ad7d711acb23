/* Meridian RUM snippet: times one small object per datacenter and posts
   the round-trip times to the Meridian that served this script. */
(function () {
  "use strict";
  var objects = /*OBJECTS*/{};
  var maxRtt = /*MAX_RTT*/5000;
  var me = document.currentScript;
  if (!me || !window.fetch || !window.performance || !window.URL) return;
  var beacon = new URL("/beacon", me.src).href;

  function get(url) {
    var busted = url + (url.indexOf("?") < 0 ? "?" : "&") +
      "meridian-rum=" + Math.random().toString(36).slice(2);
    var abort = window.AbortController ? new AbortController() : null;
    var timer = abort && setTimeout(function () { abort.abort(); }, maxRtt);
    return fetch(busted, {
      mode: "no-cors", cache: "no-store", credentials: "omit",
      signal: abort ? abort.signal : undefined
    }).then(function (r) {
      clearTimeout(timer);
      return r;
    });
  }

  // The first fetch pays for DNS, TCP and TLS; the second, on the warm
  // connection, is one round trip plus the server's time.
  async function time(url) {
    await get(url);
    var start = performance.now();
    await get(url);
    return Math.round((performance.now() - start) * 10) / 10;
  }

  async function run() {
    var out = [];
    var names = Object.keys(objects);
    for (var i = 0; i < names.length; i++) {
      try {
        var ms = await time(objects[names[i]]);
        if (ms > 0 && ms <= maxRtt) out.push({ datacenter: names[i], rtt_ms: ms });
      } catch (e) {
        // Unreachable or too slow: leave this datacenter out.
      }
    }
    if (!out.length) return;
    var body = JSON.stringify({ measurements: out });
    if (!(navigator.sendBeacon && navigator.sendBeacon(beacon, body))) {
      fetch(beacon, {
        method: "POST", body: body, keepalive: true,
        mode: "no-cors", credentials: "omit"
      }).catch(function () {});
    }
  }

  function later() { setTimeout(run, 200 + Math.random() * 1800); }
  if (document.readyState === "complete") later();
  else window.addEventListener("load", later);
})();

// Meridian's live status page: polls /status, renders zones, datacenters,
// targets and services, and calls the override endpoints. No framework,
// no external assets (the page runs under `default-src 'none'`); every
// value from the server goes into the DOM as text, never as HTML.
'use strict';

(() => {
  const POLL_MS = 1000;
  // Share of answers is computed over this window, from the deltas of the
  // monotonic per-datacenter counters between the oldest and newest poll.
  const WINDOW_S = 300;
  const TOKEN_KEY = 'meridian-admin-token';
  const MAX_EVENTS = 200;

  const $ = (id) => document.getElementById(id);

  // [{t, counts: Map("zone|service|dc" -> count)}], oldest first.
  let samples = [];
  // "kind|zone|dc[|target]" -> last seen state label, to log transitions.
  let seen = null;
  // [{t, zone, what, from, to, source}], newest first.
  let events = [];
  let nextEvent = 0;
  let timer = null;
  let inFlight = false;

  //------------ Token ------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function headers() {
    const h = { Accept: 'application/json' };
    const t = token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  function askToken(reason) {
    $('token-form').hidden = false;
    $('forget').hidden = !token();
    setConn(reason, 'bad');
    $('token').focus();
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token').value = '';
    $('token-form').hidden = true;
    $('forget').hidden = false;
    pollNow();
  });

  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('forget').hidden = true;
    pollNow();
  });

  //------------ Talking to the API ------------------------------------------

  async function api(method, path) {
    const r = await fetch(path, {
      method,
      headers: headers(),
      cache: 'no-store',
      credentials: 'same-origin',
      redirect: 'error',
    });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    return { status: r.status, body };
  }

  const reason = (r) =>
    (r.body && typeof r.body.error === 'string') ? r.body.error : 'HTTP ' + r.status;

  function setConn(text, cls) {
    const c = $('conn');
    c.textContent = text;
    c.className = 'conn ' + cls;
  }

  function message(text, cls) {
    const m = $('message');
    m.textContent = text;
    m.className = cls;
    m.hidden = !text;
  }

  async function poll() {
    if (inFlight) return;
    inFlight = true;
    let again = true;
    try {
      const r = await api('GET', '/status');
      if (r.status === 200 && r.body) {
        $('token-form').hidden = true;
        if ($('message').className === 'bad' && $('message').textContent.startsWith('/status: ')) {
          message('', '');
        }
        render(r.body);
        setConn('live', 'ok');
        $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      } else if (r.status === 401) {
        // Polling resumes when a token is entered.
        again = false;
        askToken(token() ? 'token refused' : 'token needed');
      } else {
        // 403 (a name in Host without a token, say): say why in full.
        setConn('refused (HTTP ' + r.status + ')', 'bad');
        message('/status: ' + reason(r), 'bad');
      }
    } catch (e) {
      setConn('server unreachable (' + e.message + ')', 'bad');
    } finally {
      inFlight = false;
    }
    clearTimeout(timer);
    if (again) timer = setTimeout(poll, POLL_MS);
  }

  function pollNow() {
    clearTimeout(timer);
    poll();
  }

  async function act(zone, dc, action) {
    const path = '/datacenters/' + encodeURIComponent(zone) + '/' +
      encodeURIComponent(dc) + '/' + action;
    try {
      const r = await api('POST', path);
      if (r.status === 200) {
        const warn = r.body && r.body.warning ? ' (' + r.body.warning + ')' : '';
        message(action + ' ' + dc + ' in ' + zone + ': done' + warn, warn ? 'warn' : 'ok');
      } else if (r.status === 401) {
        askToken('token needed');
        message(action + ' ' + dc + ': ' + reason(r), 'bad');
      } else {
        message(action + ' ' + dc + ': ' + reason(r), 'bad');
      }
    } catch (e) {
      message(action + ' ' + dc + ': ' + e.message, 'bad');
    }
    pollNow();
  }

  //------------ Formatting --------------------------------------------------

  const DASH = '—';

  function ms(v) {
    if (typeof v !== 'number') return DASH;
    return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  }

  function ago(unix, now) {
    if (typeof unix !== 'number') return DASH;
    const s = Math.max(0, Math.round(now - unix));
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's ago';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm ago';
    return Math.floor(s / 86400) + 'd ago';
  }

  const stamp = (unix) => new Date(unix * 1000).toLocaleString();

  // What routing sees: an override beats the probes.
  function dcState(dc) {
    if (dc.override === 'drain') return 'drain';
    if (dc.override === 'force-up') return 'force-up';
    if (dc.observed === 'up') return 'up';
    if (dc.observed === 'down') return 'down';
    return 'unknown';
  }

  //------------ Rows updated in place -----------------------------------------

  // Brings `tbody` to `rows` ([{key, cls, data, cells}]) without replacing
  // rows that stay: buttons keep their identity between polls. A cell is
  // {text, cls, title} or {buttons: [{label, action, disabled, title}]};
  // a click calls onAction(row element, action).
  function syncRows(tbody, rows, onAction) {
    const old = new Map();
    for (const tr of Array.from(tbody.rows)) old.set(tr.dataset.key, tr);
    for (const row of rows) {
      let tr = old.get(row.key);
      if (tr) {
        old.delete(row.key);
      } else {
        tr = document.createElement('tr');
        tr.dataset.key = row.key;
      }
      tr.className = row.cls || '';
      for (const [k, v] of Object.entries(row.data || {})) tr.dataset[k] = v;
      while (tr.cells.length > row.cells.length) tr.deleteCell(-1);
      row.cells.forEach((cell, i) => {
        const td = tr.cells[i] || tr.insertCell(-1);
        td.className = cell.cls || '';
        td.title = cell.title || '';
        if (cell.buttons) {
          syncButtons(td, cell.buttons, onAction);
        } else if (td.firstElementChild || td.textContent !== cell.text) {
          td.textContent = cell.text;
        }
      });
      tbody.appendChild(tr);
    }
    for (const tr of old.values()) tr.remove();
  }

  function syncButtons(td, buttons, onAction) {
    if (td.children.length !== buttons.length) td.textContent = '';
    buttons.forEach((b, i) => {
      let el = td.children[i];
      if (!el) {
        el = document.createElement('button');
        el.type = 'button';
        el.addEventListener('click', () => onAction(td.parentElement, el.dataset.action));
        td.appendChild(el);
      }
      el.textContent = b.label;
      el.dataset.action = b.action;
      el.disabled = !!b.disabled;
      el.title = b.title || '';
    });
  }

  function zoneSection(main, zone) {
    for (const s of main.children) if (s.dataset.zone === zone) return s;
    const s = document.createElement('section');
    s.className = 'zone';
    s.dataset.zone = zone;
    const h = document.createElement('h2');
    h.textContent = 'Zone ' + zone;
    s.appendChild(h);
    s.appendChild(table(['Datacenter', 'State', 'Probes', 'Override', 'RTT ms',
      'Capacity', 'Targets up', 'Last change', 'Actions'], 'dcs'));
    s.appendChild(table(['Service', 'Policy', 'Datacenter', 'Usable',
      'Weight (cfg → eff)', 'Share', 'Answers/s', 'Answers'], 'services'));
    main.appendChild(s);
    return s;
  }

  function table(columns, cls) {
    const t = document.createElement('table');
    t.className = cls;
    const tr = t.createTHead().insertRow();
    for (const c of columns) {
      const th = document.createElement('th');
      th.textContent = c;
      tr.appendChild(th);
    }
    t.createTBody();
    return t;
  }

  //------------ Answer shares -------------------------------------------------

  // Records this poll's counters; returns a function giving, for one
  // service's datacenter, {share, rate, total} over the window (null
  // without counters or before a second sample).
  function recordAnswers(status, now) {
    const counts = new Map();
    let any = false;
    for (const z of status.zones || []) {
      for (const s of z.services || []) {
        if (!s.answers || typeof s.answers !== 'object') continue;
        any = true;
        for (const [dc, n] of Object.entries(s.answers)) {
          if (typeof n === 'number') counts.set(z.zone + '|' + s.name + '|' + dc, n);
        }
      }
    }
    // A counter that went down means the server restarted: start over.
    const prev = samples[samples.length - 1];
    if (prev) {
      for (const [k, n] of counts) {
        if (prev.counts.has(k) && n < prev.counts.get(k)) {
          samples = [];
          break;
        }
      }
    }
    samples.push({ t: now, counts });
    while (samples.length > 2 && samples[1].t <= now - WINDOW_S) samples.shift();
    const base = samples[0];
    const span = now - base.t;
    return (zone, service, dcs, dc) => {
      if (!any) return null;
      const delta = (d) => {
        const k = zone + '|' + service + '|' + d;
        return (counts.get(k) || 0) - (base.counts.get(k) || 0);
      };
      const mine = delta(dc);
      let total = 0;
      for (const d of dcs) total += delta(d);
      return {
        share: span > 0 && total > 0 ? mine / total : null,
        rate: span > 0 ? mine / span : null,
        total: counts.get(zone + '|' + service + '|' + dc),
        span,
      };
    };
  }

  //------------ Transitions ---------------------------------------------------

  function note(key, zone, what, to, now, serverTime) {
    if (seen === null) return;
    const from = seen.get(key);
    seen.set(key, to);
    if (from === undefined || from === to) return;
    events.unshift({ id: nextEvent++, t: serverTime || now, zone, what, from, to, source: 'live' });
  }

  // The first poll seeds the log from the server's per-target
  // last_change_unix (the latest change of each target, if any).
  function seed(status) {
    for (const z of status.zones || []) {
      for (const dc of z.datacenters || []) {
        for (const t of dc.targets || []) {
          if (typeof t.last_change_unix === 'number') {
            events.push({
              id: nextEvent++, t: t.last_change_unix, zone: z.zone, what: dc.name + ' target ' + t.target,
              from: DASH, to: t.state, source: 'server',
            });
          }
        }
      }
    }
  }

  //------------ Rendering -----------------------------------------------------

  function render(status) {
    const now = Date.now() / 1000;
    const first = seen === null;
    if (first) seen = new Map();
    const answers = recordAnswers(status, now);
    const main = $('zones');
    const zones = status.zones || [];
    for (const s of Array.from(main.children)) {
      if (!zones.some((z) => z.zone === s.dataset.zone)) s.remove();
    }
    for (const z of zones) {
      const section = zoneSection(main, z.zone);
      renderDcs(section.querySelector('table.dcs').tBodies[0], z, now);
      renderServices(section.querySelector('table.services').tBodies[0], z, answers);
    }
    if (first) seed(status);
    // Target changes carry the server's time, datacenter changes the
    // poll's: order by time, newest first, then by arrival.
    events.sort((a, b) => b.t - a.t || b.id - a.id);
    if (events.length > MAX_EVENTS) events.length = MAX_EVENTS;
    renderEvents(now);
  }

  function renderDcs(tbody, z, now) {
    const rows = [];
    for (const dc of z.datacenters || []) {
      const state = dcState(dc);
      note('dc|' + z.zone + '|' + dc.name, z.zone, dc.name, state.toUpperCase(), now);
      const targets = dc.targets || [];
      const up = targets.filter((t) => t.state === 'up').length;
      const changed = targets.map((t) => t.last_change_unix)
        .filter((t) => typeof t === 'number');
      const last = changed.length ? Math.max(...changed) : null;
      const probe = dc.probe
        ? dc.probe.type + ' every ' + dc.probe.interval_ms + ' ms, rise ' + dc.probe.rise + ', fall ' + dc.probe.fall
        : 'no probe: always up unless overridden';
      rows.push({
        key: 'dc|' + dc.name,
        cls: 'dc st-' + state + (dc.usable ? '' : ' unusable'),
        data: { dc: dc.name, zone: z.zone, state, usable: String(!!dc.usable), override: dc.override || '' },
        cells: [
          { text: dc.name, cls: 'name' },
          { text: state.toUpperCase(), cls: 'state', title: dc.usable ? 'answers may use it' : 'not used in answers' },
          { text: dc.probe ? dc.observed : 'no probe', title: probe },
          { text: dc.override || DASH },
          { text: ms(dc.rtt_ms) + (dc.congested ? ' (congested)' : ''), cls: 'num' },
          { text: typeof dc.capacity === 'number' ? dc.capacity + '%' : DASH, cls: 'num' },
          { text: targets.length ? up + '/' + targets.length : DASH, cls: 'num' },
          { text: ago(last, now), title: last ? stamp(last) : '' },
          {
            buttons: [
              { label: 'Drain', action: 'drain', disabled: dc.override === 'drain', title: 'never answer with ' + dc.name },
              { label: 'Undrain', action: 'undrain', disabled: !dc.override, title: 'clear the override: the probes decide' },
              { label: 'Force up', action: 'force-up', disabled: dc.override === 'force-up', title: 'answer with ' + dc.name + ' whatever the probes say' },
            ],
          },
        ],
      });
      for (const t of targets) {
        note('t|' + z.zone + '|' + dc.name + '|' + t.target, z.zone, dc.name + ' target ' + t.target,
          t.state, now, t.last_change_unix);
        const why = t.last_error ? t.last_result + ': ' + t.last_error : (t.last_result || 'no result yet');
        const rtt = t.rtt && typeof t.rtt.smoothed_ms === 'number' ? t.rtt.smoothed_ms : t.rtt_ms;
        rows.push({
          key: 't|' + dc.name + '|' + t.target,
          cls: 'target st-' + t.state,
          data: { dc: dc.name, target: t.target, state: t.state },
          cells: [
            { text: t.target, cls: 'name', title: 'probe target of ' + dc.name },
            { text: String(t.state).toUpperCase(), cls: 'state' },
            { text: why, title: 'passes ' + t.consecutive_passes + ', failures ' + t.consecutive_failures + ', probes ' + t.probes },
            { text: t.local_fault ? 'local fault' : '', title: t.local_fault || '' },
            { text: ms(rtt), cls: 'num', title: 'smoothed probe RTT' },
            { text: typeof t.reported_capacity === 'number' ? t.reported_capacity + '%' : '', cls: 'num' },
            { text: '' },
            { text: ago(t.last_change_unix, now), title: typeof t.last_change_unix === 'number' ? stamp(t.last_change_unix) : '' },
            { text: '' },
          ],
        });
      }
    }
    syncRows(tbody, rows, (tr, action) => act(tr.dataset.zone, tr.dataset.dc, action));
  }

  function renderServices(tbody, z, answers) {
    const rows = [];
    const dcsByName = new Map((z.datacenters || []).map((d) => [d.name, d]));
    for (const s of z.services || []) {
      const usable = new Set(s.usable || []);
      (s.datacenters || []).forEach((name, i) => {
        const a = answers(z.zone, s.name, s.datacenters, name);
        const w = s.weights && s.weights[name];
        const dc = dcsByName.get(name);
        const state = dc ? dcState(dc) : 'unknown';
        rows.push({
          key: s.name + '|' + name,
          cls: (i === 0 ? 'first ' : '') + (usable.has(name) ? 'usable' : 'unusable') + (s.all_down ? ' all-down' : ''),
          data: { service: s.name, dc: name, usable: String(usable.has(name)) },
          cells: [
            { text: i === 0 ? s.name : '', cls: 'name', title: s.fqdn },
            { text: i === 0 ? s.policy + (s.all_down ? ' (ALL DOWN)' : '') : '' },
            { text: name, cls: 'st-' + state },
            { text: usable.has(name) ? 'yes' : 'no', cls: usable.has(name) ? 'yes' : 'no' },
            { text: w ? w.configured + ' → ' + fmtWeight(w.effective) : DASH, cls: 'num', title: w ? 'capacity ' + w.capacity + '%' : 'policy does not use weights' },
            shareCell(a),
            { text: a && a.rate !== null ? a.rate.toFixed(1) : DASH, cls: 'num' },
            { text: a && typeof a.total === 'number' ? String(a.total) : DASH, cls: 'num', title: 'answers since start' },
          ],
        });
      });
    }
    syncRows(tbody, rows);
  }

  const fmtWeight = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : DASH);

  function shareCell(a) {
    if (!a) return { text: DASH, cls: 'num share', title: 'this server does not count answers per datacenter' };
    if (a.share === null) return { text: DASH, cls: 'num share', title: 'no answers in the window yet' };
    const pct = (a.share * 100).toFixed(a.share < 0.1 ? 1 : 0) + '%';
    return { text: pct, cls: 'num share', title: 'over the last ' + Math.round(a.span) + ' s' };
  }

  function renderEvents(now) {
    const rows = events.map((e) => ({
      key: 'ev' + e.id,
      cls: 'ev st-' + String(e.to).toLowerCase(),
      data: { what: e.what, to: e.to },
      cells: [
        { text: ago(e.t, now), title: stamp(e.t) },
        { text: e.zone },
        { text: e.what, cls: 'name' },
        { text: e.from },
        { text: e.to, cls: 'state' },
        { text: e.source === 'server' ? 'last change (server)' : 'while open' },
      ],
    }));
    syncRows($('events'), rows);
  }

  poll();
})();

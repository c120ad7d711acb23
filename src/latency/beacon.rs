//! The RUM beacon listener and the JavaScript snippet it serves.
//!
//! Browsers on the internet call this listener, so it runs apart from the
//! admin API (`[rum] listen`, off by default) and believes nothing it
//! cannot check:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/meridian-rum.js` | the snippet, with `[rum.objects]` filled in |
//! | POST | `/beacon` | one client's measurements; `204` when taken |
//! | OPTIONS | `/beacon` | CORS preflight; `204` |
//!
//! # A beacon
//!
//! `{"measurements": [{"datacenter": "eu-west", "rtt_ms": 23.4}, ...]}`,
//! in any content type (`navigator.sendBeacon` sends `text/plain`). The
//! whole batch is checked before any of it is used; the first fault is
//! answered `400` with `{"error": "measurements[3].rtt_ms: ..."}`:
//! JSON that is not a beacon (unknown fields included), an RTT that is
//! not a number, not above 0 or over `[latency] max_rtt_ms`, an unknown
//! datacenter, a datacenter twice, no measurements, or more than
//! `[rum] max_measurements`. A body over [`MAX_BEACON_BYTES`] gets `413`.
//!
//! # Whose measurement
//!
//! The client is the TCP peer. When the peer is in `trusted_proxies`,
//! `X-Forwarded-For` is walked from the right, skipping trusted hops; the
//! first untrusted address is the client (all trusted: the leftmost). A
//! hop that is not an address is a `400`: a proxy we trust wrote it, and
//! guessing past it would let the client choose its own address.
//!
//! # Limits
//!
//! * `beacons_per_minute` per client network (the `[latency]` fine key,
//!   /24 and /48 by default), as a token bucket that allows a burst of
//!   that many; over it, `429` with `Retry-After` in seconds. Networks are
//!   kept in a table of at most [`RATE_TABLE_CAP`]; when it is full, the
//!   buckets that have refilled are dropped (they hold no state), then the
//!   least recently used 1/64.
//! * The admin listener's machinery: `max_connections` (over it, `503`
//!   and close), and the fixed [`HEADER_TIMEOUT`], [`IDLE_TIMEOUT`] and
//!   [`REQUEST_TIMEOUT`].
//!
//! # CORS
//!
//! A request whose `Origin` is allowed by `allowed_origins` gets
//! `Access-Control-Allow-Origin` (`*`, or its own origin with
//! `Vary: Origin`). A beacon whose `Origin` is present and not allowed is
//! refused `403` and not used: `sendBeacon` posts without a preflight and
//! ignores the answer, so leaving out the header alone would still let
//! any site feed data in. A request without `Origin` (not a browser) is
//! taken. Preflights get `204` with `Access-Control-Allow-Methods: POST`
//! and `Access-Control-Allow-Headers: Content-Type`.
//!
//! # The admin import
//!
//! [`import`] checks a batch for the admin API's `POST /latency/import`
//! the same way, per measurement with a `client` address and a `samples`
//! weight (1 to 10,000, default 1), at most [`MAX_IMPORT_MEASUREMENTS`]
//! per batch, without a rate limit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, error};
use crate::config::RumConfig;
use crate::latency::table::key_for;

/// Largest beacon body; larger ones get `413`.
pub const MAX_BEACON_BYTES: usize = 16 * 1024;
/// Time a client has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a kept-alive connection may sit between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for a request's body and answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Client networks the rate limiter remembers (about 3.5 MiB at most).
pub const RATE_TABLE_CAP: usize = 65_536;
/// Most measurements in one `POST /latency/import`.
pub const MAX_IMPORT_MEASUREMENTS: usize = 10_000;
/// Largest `samples` weight of one imported measurement.
pub use super::rum::MAX_SAMPLE_WEIGHT as MAX_IMPORT_SAMPLES;
/// How long browsers and caches may keep the snippet: 300 s.
pub const SNIPPET_CACHE_CONTROL: &str = "public, max-age=300";

/// The snippet's source; `/*OBJECTS*/{}` and `/*MAX_RTT*/5000` are
/// replaced when it is served.
const SNIPPET_TEMPLATE: &str = include_str!("rum.js");

/// Sent, if the socket takes it at once, to a connection over the cap.
pub(crate) const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 44\r\n\
connection: close\r\n\r\n\
{\"error\":\"too many beacon connections open\"}";

//------------ BeaconSink -----------------------------------------------------

/// Where validated measurements go (the RUM aggregator).
pub trait BeaconSink: Send + Sync {
    /// Whether `datacenter` is a datacenter name measurements may name.
    fn known(&self, datacenter: &str) -> bool;
    /// Validated samples of one client: (datacenter name, rtt_ms, weight).
    /// weight = 1 for beacons.
    fn accept(&self, client: IpAddr, samples: &[(String, f64, f64)]);
    /// The `[latency]` settings beacons are checked and rate limited by,
    /// as they are now (a reload changes them).
    fn limits(&self) -> BeaconLimits {
        BeaconLimits::default()
    }
}

/// What the listener needs from `[latency]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeaconLimits {
    /// Largest RTT accepted, ms (`[latency] max_rtt_ms`).
    pub max_rtt_ms: f64,
    /// IPv4 prefix of a client network, for the rate limit.
    pub ipv4_prefix_length: u8,
    /// IPv6 prefix of a client network, for the rate limit.
    pub ipv6_prefix_length: u8,
}

impl Default for BeaconLimits {
    fn default() -> Self {
        let c = crate::config::LatencyConfig::default();
        Self {
            max_rtt_ms: c.max_rtt_ms,
            ipv4_prefix_length: c.fine.0,
            ipv6_prefix_length: c.fine.1,
        }
    }
}

/// What the admin API's `POST /latency/import` feeds.
#[derive(Clone)]
pub struct Import {
    /// The aggregator.
    pub sink: Arc<dyn BeaconSink>,
}

impl fmt::Debug for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Import").finish_non_exhaustive()
    }
}

/// The listener's counters, for `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BeaconStats {
    /// Beacons handed to the sink.
    pub accepted: u64,
    /// Measurements in them.
    pub measurements: u64,
    /// Beacons refused with 400, 403 or 413.
    pub rejected: u64,
    /// Beacons refused with 429.
    pub rate_limited: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    measurements: AtomicU64,
    rejected: AtomicU64,
    rate_limited: AtomicU64,
}

//------------ Beacons --------------------------------------------------------

/// The listener's state: settings, sink, rate limiter and counters.
pub struct Beacons {
    settings: Arc<RumConfig>,
    sink: Arc<dyn BeaconSink>,
    snippet: Bytes,
    rates: Mutex<RateTable>,
    /// The rate limiter's time base.
    epoch: tokio::time::Instant,
    counters: Counters,
}

impl fmt::Debug for Beacons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Beacons")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Beacons {
    /// The listener's state for `settings`, feeding `sink`.
    pub fn new(settings: Arc<RumConfig>, sink: Arc<dyn BeaconSink>) -> Arc<Self> {
        let snippet = Bytes::from(snippet(&settings, sink.limits().max_rtt_ms));
        let rates = RateTable::new(settings.beacons_per_minute, RATE_TABLE_CAP);
        Arc::new(Self {
            settings,
            sink,
            snippet,
            rates: Mutex::new(rates),
            epoch: tokio::time::Instant::now(),
            counters: Counters::default(),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> BeaconStats {
        let c = &self.counters;
        BeaconStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            measurements: c.measurements.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
        }
    }

    /// The listener's routes (exposed for tests and fuzzing, which drive
    /// it without a socket).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/beacon",
                axum::routing::post(post_beacon).options(preflight),
            )
            .route("/meridian-rum.js", get(serve_snippet))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
            .with_state(Arc::clone(self))
            .layer(DefaultBodyLimit::max(MAX_BEACON_BYTES))
            .layer(axum::middleware::from_fn_with_state(Arc::clone(self), cors))
            .layer(axum::middleware::from_fn(admin::json_errors))
    }

    fn milliseconds(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn refuse(&self, status: StatusCode, message: impl fmt::Display) -> Response {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%status, %message, "beacon refused");
        error(status, message)
    }
}

/// Serves beacons on `listener` until `shutdown` is cancelled, then lets
/// requests in progress finish.
pub async fn serve(listener: TcpListener, beacons: Arc<Beacons>, shutdown: CancellationToken) {
    let settings = &beacons.settings;
    if listener.local_addr().is_ok_and(|a| a.ip().is_loopback())
        && settings.trusted_proxies.is_empty()
    {
        tracing::warn!(
            "the RUM beacon listener is on loopback without trusted_proxies: behind a local \
             reverse proxy every beacon counts as the proxy's; list it in [rum] trusted_proxies"
        );
    }
    let limits = admin::Limits {
        name: "RUM beacon listener",
        busy: BUSY,
        max_connections: settings.max_connections as usize,
        timeouts: admin::Timeouts {
            header: HEADER_TIMEOUT,
            idle: IDLE_TIMEOUT,
            request: REQUEST_TIMEOUT,
        },
        timeout_hint: "the beacon listener's request timeout",
    };
    admin::serve_router(listener, beacons.router(), limits, shutdown).await;
}

//------------ Handlers -------------------------------------------------------

async fn post_beacon(
    State(beacons): State<Arc<Beacons>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let headers = request.headers();
    let client = match client_address(peer.ip(), headers, &beacons.settings.trusted_proxies) {
        Ok(client) => client,
        Err(e) => return beacons.refuse(StatusCode::BAD_REQUEST, e),
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !beacons.settings.allowed_origins.allows(text) {
            return beacons.refuse(
                StatusCode::FORBIDDEN,
                format!("origin {text:?} is not in [rum] allowed_origins"),
            );
        }
    }
    let limits = beacons.sink.limits();
    let key = key_for(client, limits.ipv4_prefix_length, limits.ipv6_prefix_length);
    let now = beacons.milliseconds();
    let checked = beacons
        .rates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(key, now);
    if let Err(retry) = checked {
        beacons
            .counters
            .rate_limited
            .fetch_add(1, Ordering::Relaxed);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "over beacons_per_minute ({}) for this client network; retry in {retry} s",
                beacons.settings.beacons_per_minute
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        return r;
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return beacons.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("beacon over {MAX_BEACON_BYTES} bytes"),
            );
        }
        Err(e) => return beacons.refuse(e.status(), e.body_text()),
    };
    let samples = match parse_beacon(
        &body,
        &*beacons.sink,
        beacons.settings.max_measurements,
        limits.max_rtt_ms,
    ) {
        Ok(samples) => samples,
        Err(e) => return beacons.refuse(StatusCode::BAD_REQUEST, e),
    };
    beacons.sink.accept(client, &samples);
    let c = &beacons.counters;
    c.accepted.fetch_add(1, Ordering::Relaxed);
    c.measurements
        .fetch_add(samples.len() as u64, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

async fn serve_snippet(State(beacons): State<Arc<Beacons>>) -> Response {
    let mut r = beacons.snippet.clone().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(SNIPPET_CACHE_CONTROL),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Adds `Access-Control-Allow-Origin` for an allowed `Origin`.
async fn cors(State(beacons): State<Arc<Beacons>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = next.run(request).await;
    let Some(origin) = origin else {
        return response;
    };
    let allowed = &beacons.settings.allowed_origins;
    let h = response.headers_mut();
    match allowed {
        crate::config::AllowedOrigins::Any => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        crate::config::AllowedOrigins::Only(_) => {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
            if origin.to_str().is_ok_and(|o| allowed.allows(o)) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            }
        }
    }
    response
}

//------------ The client's address -------------------------------------------

/// The client behind `peer`: `peer` itself unless it is a trusted proxy,
/// else the first untrusted hop of `X-Forwarded-For` from the right.
fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Result<IpAddr, String> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return Ok(client);
    }
    // Several headers are one list, in order (RFC 9110 §5.3).
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for value in values.into_iter().rev() {
        let text = value
            .to_str()
            .map_err(|_| "X-Forwarded-For is not ASCII".to_string())?;
        for hop in text.rsplit(',') {
            client = parse_hop(hop).ok_or_else(|| {
                format!("X-Forwarded-For hop {:?} is not an IP address", hop.trim())
            })?;
            if !is_trusted(&client) {
                return Ok(client);
            }
        }
    }
    Ok(client)
}

/// One `X-Forwarded-For` hop: an address, `ADDR:PORT`, `[V6]` or
/// `[V6]:PORT`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

//------------ Validation -----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBeacon {
    measurements: Vec<RawMeasurement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasurement {
    datacenter: String,
    rtt_ms: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImport {
    measurements: Vec<RawImported>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImported {
    client: String,
    datacenter: String,
    rtt_ms: f64,
    samples: Option<f64>,
}

/// Parses JSON into `T`; errors name the key path, such as
/// `measurements[2].rtt_ms`.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let top = e
            .path()
            .iter()
            .all(|s| matches!(s, serde_path_to_error::Segment::Unknown));
        let inner = e.inner();
        let syntax = if inner.is_syntax() || inner.is_eof() {
            // Such as NaN, which JSON cannot carry.
            "invalid JSON: "
        } else {
            ""
        };
        if top {
            format!("not a beacon: {syntax}{inner}; send {shape}")
        } else {
            format!("{path}: {syntax}{inner}")
        }
    })?;
    de.end()
        .map_err(|e| format!("not a beacon: {e}; send {shape}"))?;
    Ok(value)
}

/// The measurement count, 1 to `max`.
fn check_count(n: usize, max: usize, key: &str) -> Result<(), String> {
    if n == 0 {
        return Err("measurements: empty; send at least one".to_string());
    }
    if n > max {
        return Err(format!(
            "measurements: {n} of them, at most {max} in one batch ({key})"
        ));
    }
    Ok(())
}

/// One measurement's datacenter and RTT.
fn check_measurement(
    i: usize,
    datacenter: &str,
    rtt_ms: f64,
    sink: &dyn BeaconSink,
    max_rtt_ms: f64,
) -> Result<(), String> {
    // NaN fails `> 0` too (serde_json never yields one, but be sure).
    if !(rtt_ms > 0.0 && rtt_ms <= max_rtt_ms) {
        return Err(format!(
            "measurements[{i}].rtt_ms: {rtt_ms} is not a round-trip time (above 0, at most max_rtt_ms = {max_rtt_ms})"
        ));
    }
    if !sink.known(datacenter) {
        return Err(format!(
            "measurements[{i}].datacenter: unknown datacenter {datacenter:?}"
        ));
    }
    Ok(())
}

const BEACON_SHAPE: &str = r#"{"measurements": [{"datacenter": NAME, "rtt_ms": MS}, ...]}"#;
const IMPORT_SHAPE: &str =
    r#"{"measurements": [{"client": IP, "datacenter": NAME, "rtt_ms": MS, "samples": N}, ...]}"#;

/// A beacon body, checked whole: its samples, weight 1, or the first
/// fault.
fn parse_beacon(
    body: &[u8],
    sink: &dyn BeaconSink,
    max_measurements: u16,
    max_rtt_ms: f64,
) -> Result<Vec<(String, f64, f64)>, String> {
    let beacon: RawBeacon = parse_json(body, BEACON_SHAPE)?;
    let list = beacon.measurements;
    check_count(
        list.len(),
        max_measurements.into(),
        "[rum] max_measurements",
    )?;
    let mut seen: HashSet<&str> = HashSet::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        check_measurement(i, &m.datacenter, m.rtt_ms, sink, max_rtt_ms)?;
        if !seen.insert(&m.datacenter) {
            return Err(format!(
                "measurements[{i}].datacenter: {:?} is measured twice in one beacon",
                m.datacenter
            ));
        }
    }
    Ok(list
        .into_iter()
        .map(|m| (m.datacenter, m.rtt_ms, 1.0))
        .collect())
}

/// Checks a `POST /latency/import` body whole, then hands it to the sink
/// client by client; returns how many measurements it took.
pub fn import(body: &[u8], target: &Import) -> Result<usize, String> {
    let batch: RawImport = parse_json(body, IMPORT_SHAPE)?;
    let list = batch.measurements;
    check_count(list.len(), MAX_IMPORT_MEASUREMENTS, "the import limit")?;
    let mut by_client: BTreeMap<IpAddr, Vec<(String, f64, f64)>> = BTreeMap::new();
    for (i, m) in list.iter().enumerate() {
        let client = m.client.parse::<IpAddr>().map_err(|_| {
            format!(
                "measurements[{i}].client: {:?} is not an IP address",
                m.client
            )
        })?;
        check_measurement(
            i,
            &m.datacenter,
            m.rtt_ms,
            &*target.sink,
            target.sink.limits().max_rtt_ms,
        )?;
        let samples = m.samples.unwrap_or(1.0);
        if !(1.0..=MAX_IMPORT_SAMPLES).contains(&samples) {
            return Err(format!(
                "measurements[{i}].samples: {samples} is out of range (1 to {MAX_IMPORT_SAMPLES})"
            ));
        }
        by_client.entry(client.to_canonical()).or_default().push((
            m.datacenter.clone(),
            m.rtt_ms,
            samples,
        ));
    }
    for (client, samples) in &by_client {
        target.sink.accept(*client, samples);
    }
    Ok(list.len())
}

//------------ The rate limiter -----------------------------------------------

/// Token buckets per client network: `per_minute` tokens at most, one
/// more every `60 / per_minute` s, one per beacon. Time is passed in
/// (milliseconds since any fixed point), so it is tested without a clock.
#[derive(Debug)]
struct RateTable {
    buckets: HashMap<u64, Bucket>,
    per_minute: f64,
    cap: usize,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was right.
    at_ms: u64,
}

impl RateTable {
    fn new(per_minute: u32, cap: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            per_minute: f64::from(per_minute.max(1)),
            cap: cap.max(64),
        }
    }

    /// Takes a token for `key`, or says in how many seconds one will be
    /// there.
    fn check(&mut self, key: u64, now_ms: u64) -> Result<(), u32> {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.cap {
            self.evict(now_ms);
        }
        let full = Bucket {
            tokens: self.per_minute,
            at_ms: now_ms,
        };
        let old = self.buckets.get(&key).copied().unwrap_or(full);
        let tokens = refilled(&old, now_ms, self.per_minute);
        if tokens >= 1.0 {
            self.buckets.insert(
                key,
                Bucket {
                    tokens: tokens - 1.0,
                    at_ms: now_ms,
                },
            );
            return Ok(());
        }
        let wait_s = (1.0 - tokens) * 60.0 / self.per_minute;
        Err(wait_s.ceil().max(1.0) as u32)
    }

    /// Makes room for at least 1/64 of the table, so a full table is
    /// scanned once per 1/64 of new networks, not for each: drops the
    /// buckets that have refilled (they say nothing a new one would not),
    /// then as many of the least recently used as are still needed.
    fn evict(&mut self, now_ms: u64) {
        let per_minute = self.per_minute;
        self.buckets
            .retain(|_, b| refilled(b, now_ms, per_minute) < per_minute);
        let room = self.cap.saturating_sub(self.buckets.len());
        let want = (self.cap / 64).max(1);
        if room >= want {
            return;
        }
        let mut ages: Vec<u64> = self.buckets.values().map(|b| b.at_ms).collect();
        let n = (want - room).min(ages.len());
        if n == 0 {
            return;
        }
        let (_, &mut cutoff, _) = ages.select_nth_unstable(n - 1);
        let mut left = n;
        self.buckets.retain(|_, b| {
            if b.at_ms <= cutoff && left > 0 {
                left -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Tokens `b` has at `now_ms`, refilling `per_minute` a minute up to
/// `per_minute`.
fn refilled(b: &Bucket, now_ms: u64, per_minute: f64) -> f64 {
    let refill = now_ms.saturating_sub(b.at_ms) as f64 * per_minute / 60_000.0;
    (b.tokens + refill).min(per_minute)
}

//------------ The snippet ----------------------------------------------------

/// The snippet with the objects and `max_rtt_ms` filled in. It posts to
/// `/beacon` on the origin it was loaded from (`document.currentScript`),
/// so it needs no URL of its own.
pub fn snippet(settings: &RumConfig, max_rtt_ms: f64) -> String {
    let objects = serde_json::to_string(&settings.objects).unwrap_or_else(|_| "{}".to_string());
    // Safe inside any script context: no `</script>`, no line
    // separators (which end string literals before ES2019).
    let objects = objects
        .replace('<', "\\u003c")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    SNIPPET_TEMPLATE
        .replacen("/*OBJECTS*/{}", &objects, 1)
        .replacen("/*MAX_RTT*/5000", &max_rtt_ms.to_string(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Known(&'static [&'static str]);

    impl BeaconSink for Known {
        fn known(&self, datacenter: &str) -> bool {
            self.0.contains(&datacenter)
        }
        fn accept(&self, _: IpAddr, _: &[(String, f64, f64)]) {}
    }

    const DCS: Known = Known(&["eu-west", "us-east"]);

    fn beacon(body: &str) -> Result<Vec<(String, f64, f64)>, String> {
        parse_beacon(body.as_bytes(), &DCS, 4, 5000.0)
    }

    #[test]
    fn a_valid_beacon_gives_weight_one_samples() {
        let s = beacon(
            r#"{"measurements":[{"datacenter":"eu-west","rtt_ms":23.4},{"datacenter":"us-east","rtt_ms":5000}]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            vec![
                ("eu-west".to_string(), 23.4, 1.0),
                ("us-east".to_string(), 5000.0, 1.0)
            ]
        );
    }

    #[test]
    fn every_fault_is_named_by_index_and_reason() {
        let m = |dc: &str, rtt: &str| format!(r#"{{"datacenter":"{dc}","rtt_ms":{rtt}}}"#);
        let ok = m("eu-west", "10");
        let cases = [
            ("{".to_string(), "not a beacon"),
            ("[]".to_string(), "not a beacon"),
            ("{} x".to_string(), "not a beacon"),
            (r#"{"measurements":[]}"#.to_string(), "empty"),
            (
                format!(r#"{{"measurements":[{ok},{ok},{ok},{ok},{ok}]}}"#),
                "5 of them, at most 4",
            ),
            (
                format!(r#"{{"measurements":[{ok},{}]}}"#, m("us-east", "\"NaN\"")),
                "measurements[1].rtt_ms: invalid type: string",
            ),
            (
                format!(r#"{{"measurements":[{}]}}"#, m("us-east", "-3")),
                "measurements[0].rtt_ms: -3 is not",
            ),
            (
                format!(r#"{{"measurements":[{}]}}"#, m("us-east", "0")),
                "measurements[0].rtt_ms: 0 is not",
            ),
            (
                format!(r#"{{"measurements":[{}]}}"#, m("us-east", "5000.1")),
                "max_rtt_ms = 5000",
            ),
            (
                format!(r#"{{"measurements":[{}]}}"#, m("us-east", "1e999")),
                "measurements[0].rtt_ms: invalid JSON: number out of range",
            ),
            (
                format!(r#"{{"measurements":[{ok},{}]}}"#, m("mars", "3")),
                "measurements[1].datacenter: unknown datacenter \"mars\"",
            ),
            (
                format!(r#"{{"measurements":[{ok},{ok}]}}"#),
                "measurements[1].datacenter: \"eu-west\" is measured twice",
            ),
            (
                r#"{"measurements":[{"datacenter":"eu-west","rtt_ms":1,"x":2}]}"#.to_string(),
                "measurements[0].x: unknown field",
            ),
            (
                r#"{"measurements":[{"datacenter":"eu-west"}]}"#.to_string(),
                "missing field `rtt_ms`",
            ),
        ];
        for (body, expected) in cases {
            let e = beacon(&body).unwrap_err();
            assert!(e.contains(expected), "{body}: {e}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.1.2.3");
        let from = |peer, values: &[&str]| client_address(peer, &headers(values), &trusted);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            from(ip("192.0.2.9"), &["198.51.100.1"]),
            Ok(ip("192.0.2.9"))
        );
        // Right to left, past trusted hops, across repeated headers.
        assert_eq!(
            from(proxy, &["203.0.113.5, 198.51.100.1", "10.9.9.9"]),
            Ok(ip("198.51.100.1"))
        );
        // A forged leftmost entry is not reached.
        assert_eq!(
            from(proxy, &["1.1.1.1, 198.51.100.1"]),
            Ok(ip("198.51.100.1"))
        );
        // Ports and brackets, and mapped addresses, are understood.
        assert_eq!(from(proxy, &["[2001:db8::1]:443"]), Ok(ip("2001:db8::1")));
        assert_eq!(from(proxy, &["192.0.2.1:80"]), Ok(ip("192.0.2.1")));
        assert_eq!(from(proxy, &["::ffff:192.0.2.1"]), Ok(ip("192.0.2.1")));
        // All trusted: the leftmost; no header: the proxy.
        assert_eq!(from(proxy, &["10.0.0.1, 10.0.0.2"]), Ok(ip("10.0.0.1")));
        assert_eq!(from(proxy, &[]), Ok(proxy));
        // Garbage from a trusted proxy is refused, not guessed past.
        assert!(
            from(proxy, &["198.51.100.1, unknown"])
                .unwrap_err()
                .contains("\"unknown\"")
        );
        assert!(from(proxy, &["198.51.100.1,,"]).is_err());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let mut t = RateTable::new(6, 1024);
        for _ in 0..6 {
            assert_eq!(t.check(1, 0), Ok(()));
        }
        // One token per 10 s.
        assert_eq!(t.check(1, 0), Err(10));
        assert_eq!(t.check(1, 7_500), Err(3));
        // Another network is untouched.
        assert_eq!(t.check(2, 7_500), Ok(()));
        assert_eq!(t.check(1, 10_000), Ok(()));
        assert_eq!(t.check(1, 10_000), Err(10));
        // A minute refills all six, no more.
        for _ in 0..6 {
            assert_eq!(t.check(1, 600_000), Ok(()));
        }
        assert!(t.check(1, 600_000).is_err());
    }

    #[test]
    fn a_full_table_drops_refilled_buckets_then_the_oldest() {
        let mut t = RateTable::new(60, 128);
        for key in 0..128 {
            assert_eq!(t.check(key, key), Ok(()));
        }
        // Nothing has refilled at 200 ms: the oldest 128/64 = 2 go.
        assert_eq!(t.check(1000, 200), Ok(()));
        assert_eq!(t.buckets.len(), 127);
        assert!(!t.buckets.contains_key(&0) && !t.buckets.contains_key(&1));
        assert!(t.buckets.contains_key(&2));
        // A minute on, every bucket has refilled: all go but the new one.
        t.check(2000, 200).unwrap();
        assert_eq!(t.buckets.len(), 128);
        t.check(3000, 70_000).unwrap();
        assert_eq!(t.buckets.len(), 1);
        // An evicted network starts full again; bounded either way.
        for key in 0..10_000 {
            let _ = t.check(key, 70_000);
            assert!(t.buckets.len() <= 128);
        }
    }

    #[test]
    fn the_snippet_carries_the_objects_and_stays_small() {
        let mut settings = RumConfig::default();
        for dc in ["ap-south", "eu-west", "us-east"] {
            settings.objects.insert(
                dc.to_string(),
                format!("https://{dc}.example.com/meridian-rum.gif?</script>\u{2028}"),
            );
        }
        let js = snippet(&settings, 4321.0);
        assert!(
            js.contains(
                r#""eu-west":"https://eu-west.example.com/meridian-rum.gif?\u003c/script>\u2028""#
            ),
            "{js}"
        );
        assert!(js.contains("var maxRtt = 4321;"));
        assert!(!js.contains("/*OBJECTS*/") && !js.contains("/*MAX_RTT*/"));
        assert!(js.len() < 3 * 1024, "{} bytes", js.len());
        // Each placeholder stands exactly once in the template.
        assert_eq!(SNIPPET_TEMPLATE.matches("/*OBJECTS*/{}").count(), 1);
        assert_eq!(SNIPPET_TEMPLATE.matches("/*MAX_RTT*/5000").count(), 1);
    }
}

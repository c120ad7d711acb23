//! The query log (`[query_log]`): one JSON line per logged query, written
//! by a thread of its own so the query path never waits for a disk.
//!
//! dnstap would be the interoperable format, but no maintained Rust crate
//! writes it (Frame Streams plus protobuf), so Meridian writes JSON lines
//! that `jq` and every log shipper read. Each serving thread has a
//! [`Tap`]: it counts queries and, for one in `sample`, builds a
//! [`Record`] (one allocation, the query name) and offers it to a
//! bounded queue with `try_send`. A full queue drops the record and
//! counts it (`meridian_query_log_dropped_total`); the query is answered
//! as always. With the log off there is no tap and nothing is done.
//!
//! The writer appends to the file and flushes whenever the queue is
//! empty. After every reload (SIGHUP or `POST /reload`) it reopens the
//! file, so log rotation works by renaming the file and reloading.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use crate::config::QueryLogConfig;
use crate::dns::envelope::Envelope;
use crate::dns::handler::{Seen, Transport};
use crate::dns::zone::Zone;
use crate::snapshot::Snapshot;

/// One logged query, as the serving thread hands it over.
#[derive(Debug)]
pub struct Record {
    at: SystemTime,
    proto: Transport,
    client: IpAddr,
    /// The query's ECS option: address and source prefix length.
    ecs: Option<(IpAddr, u8)>,
    /// QNAME in wire format, as the client wrote it.
    qname: Box<[u8]>,
    /// RCODE (with the extended ones the envelope answers).
    rcode: u16,
    /// The zone that answered, for its names.
    zone: Option<Arc<Zone>>,
    seen: Seen,
}

/// The log's shared state: the queue, the drop count, the reopen flag.
#[derive(Debug)]
pub struct QueryLog {
    tx: SyncSender<Record>,
    sample: u32,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    /// Shared by the TCP connections, which each serve few queries.
    tcp_count: Arc<AtomicU64>,
}

impl QueryLog {
    /// Opens (creates, appends to) the file and starts the writer thread.
    pub fn start(config: &QueryLogConfig) -> Result<Arc<Self>, String> {
        let file = open(&config.path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
        let log = Arc::new(Self {
            tx,
            sample: config.sample,
            dropped: Arc::default(),
            written: Arc::default(),
            reopen: Arc::default(),
            tcp_count: Arc::default(),
        });
        let (path, reopen, written) = (
            config.path.clone(),
            Arc::clone(&log.reopen),
            Arc::clone(&log.written),
        );
        std::thread::Builder::new()
            .name("query log".into())
            .spawn(move || write_all(rx, file, path, &reopen, &written))
            .map_err(|e| format!("cannot start the query log writer: {e}"))?;
        Ok(log)
    }

    /// A tap for one UDP serving thread (its own sample counter).
    pub fn tap(self: &Arc<Self>) -> Tap {
        Tap {
            log: Arc::clone(self),
            seen: 0,
            shared: false,
        }
    }

    /// A tap for a TCP connection (the counter shared by all of them).
    pub fn tcp_tap(self: &Arc<Self>) -> Tap {
        Tap {
            log: Arc::clone(self),
            seen: 0,
            shared: true,
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the file.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen the file (after a reload: rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

/// A serving thread's handle on the log.
#[derive(Debug)]
pub struct Tap {
    log: Arc<QueryLog>,
    seen: u64,
    shared: bool,
}

impl Tap {
    /// Offers the query `packet` from `client`, answered with `out` as
    /// `seen` says, to the log: one in `sample` is queued, never waited
    /// for.
    pub fn offer(
        &mut self,
        snap: &Snapshot,
        packet: &[u8],
        client: IpAddr,
        proto: Transport,
        seen: &Seen,
        out: &[u8],
    ) {
        let n = if self.shared {
            self.log.tcp_count.fetch_add(1, Ordering::Relaxed)
        } else {
            self.seen = self.seen.wrapping_add(1);
            self.seen - 1
        };
        if n % u64::from(self.log.sample) != 0 {
            return;
        }
        let env = Envelope::scan(packet);
        let qname = env
            .as_ref()
            .and_then(|e| e.question.as_ref())
            .and_then(|q| packet.get(12..12 + q.name_len))
            .unwrap_or_default();
        let seen = *seen;
        let record = Record {
            at: SystemTime::now(),
            proto,
            client,
            ecs: env.and_then(|e| e.ecs).map(|e| (e.addr, e.source)),
            qname: qname.into(),
            rcode: match seen.ext_rcode {
                0 => u16::from(out.get(3).map_or(0, |b| b & 0x0f)),
                x => u16::from(x),
            },
            zone: snap.zones().get(usize::from(seen.zone)).map(Arc::clone),
            seen,
        };
        match self.log.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.log.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn open(path: &PathBuf) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: cannot open the query log: {e}", path.display()))
}

/// The writer: drains the queue into the file until every tap is gone.
fn write_all(
    rx: Receiver<Record>,
    file: std::fs::File,
    path: PathBuf,
    reopen: &AtomicBool,
    written: &AtomicU64,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut line = String::with_capacity(512);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(&path) {
                Ok(f) => out = std::io::BufWriter::with_capacity(64 * 1024, f),
                Err(e) => tracing::error!("{e}; still writing to the file open before"),
            }
        }
        let mut n = 0u64;
        for record in std::iter::once(first).chain(rx.try_iter()) {
            line.clear();
            format_record(&record, &mut line);
            line.push('\n');
            if let Err(e) = out.write_all(line.as_bytes()) {
                if !failing {
                    tracing::error!("{}: cannot write the query log: {e}", path.display());
                }
                failing = true;
            } else {
                n += 1;
            }
        }
        match out.flush() {
            Ok(()) if failing => {
                tracing::info!("{}: writing the query log again", path.display());
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::error!("{}: cannot write the query log: {e}", path.display());
                }
                failing = true;
            }
        }
        written.fetch_add(n, Ordering::Relaxed);
    }
    let _ = out.flush();
}

/// A wire-format name as text: labels joined by dots, ending in a dot;
/// bytes outside printable ASCII, dots and backslashes escaped as in
/// zone files (`\DDD`, `\.`).
fn name_text(wire: &[u8], out: &mut String) {
    let mut at = 0;
    while let Some(&len) = wire.get(at) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let label = wire
            .get(at + 1..at + 1 + usize::from(len))
            .unwrap_or_default();
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
        at += 1 + usize::from(len);
    }
    if out.is_empty() || !out.ends_with('.') {
        out.push('.');
    }
}

/// One record as a JSON object (see README, "Query log").
pub fn format_record(r: &Record, out: &mut String) {
    let mut qname = String::new();
    name_text(&r.qname, &mut qname);
    let seen = &r.seen;
    let qtype = hickory_proto::rr::RecordType::from(seen.qtype).to_string();
    let (mut zone, mut service, mut step, mut dcs) = (None, None, None, Vec::new());
    if let Some(z) = &r.zone {
        zone = Some(z.origin().to_ascii());
        if seen.service != Seen::NO_SERVICE
            && let Some(s) = z.config.services.get(usize::from(seen.service))
        {
            service = Some(s.name.clone());
            step = Some(if seen.choice.all_down {
                crate::metrics::dns::ALL_DOWN.to_string()
            } else if seen.choice.degraded {
                crate::metrics::dns::HEALTH.to_string()
            } else {
                z.service(usize::from(seen.service))
                    .plan
                    .step_name(usize::from(seen.step))
                    .unwrap_or_default()
                    .to_string()
            });
            if seen.outcome == crate::policy::Outcome::Answer {
                dcs = seen
                    .choice
                    .dcs()
                    .iter()
                    .filter_map(|&d| z.config.datacenters.get(d.index()))
                    .map(|d| d.name.clone())
                    .collect();
            }
        }
    }
    let value = serde_json::json!({
        "time": crate::rfc3339(r.at),
        "proto": match r.proto { Transport::Udp => "udp", Transport::Tcp => "tcp" },
        "client": r.client.to_string(),
        "ecs": r.ecs.map(|(a, p)| format!("{a}/{p}")),
        "qname": qname,
        "qtype": qtype,
        "rcode": crate::metrics::dns::rcode_name(r.rcode),
        "zone": zone,
        "service": service,
        "datacenters": dcs,
        "step": step,
        "scope": (seen.ecs != 0).then_some(seen.scope),
    });
    out.push_str(&value.to_string());
}

//! `[cluster]` end to end: a real three-member etcd cluster on loopback
//! (Debian's `etcd-server`; scripts/test.sh installs it) and real Meridian
//! processes (the built binary, three times), so "kill" is a real SIGKILL
//! by PID. Every process is killed by PID when its guard drops, on panic
//! too. Conditions are awaited with bounded deadlines, never slept on.
//!
//! Ports are picked free at run time; 2379/2380 are never used (the
//! Debian package may run its own etcd there).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::Value;

const ORIGIN: &str = "c.test.";
const EAST: &str = "192.0.2.1";
const WEST: &str = "192.0.2.2";

//------------ Processes ----------------------------------------------------

/// A child process killed (SIGKILL) by PID when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP, never 2379/2380.
fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if port != 2379 && port != 2380 && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `ok` until it holds or `limit` passes; panics with `what`.
async fn until(limit: Duration, what: &str, mut ok: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ok().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

//------------ etcd ---------------------------------------------------------

/// A three-member etcd cluster on loopback.
struct Etcd {
    dir: tempfile::TempDir,
    clients: Vec<u16>,
    peers: Vec<u16>,
    members: Vec<Proc>,
}

impl Etcd {
    async fn start() -> Self {
        let found = Command::new("etcd").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "the etcd binary is missing: install Debian's etcd-server (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut etcd = Self {
            dir,
            clients,
            peers,
            members: Vec::new(),
        };
        for i in 0..3 {
            let p = etcd.spawn(i);
            etcd.members.push(p);
        }
        etcd.wait_healthy().await;
        etcd
    }

    fn spawn(&self, i: usize) -> Proc {
        let initial: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .map(|(j, p)| format!("m{j}=http://127.0.0.1:{p}"))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .unwrap();
        let c = self.clients[i];
        let p = self.peers[i];
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "meridian-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        Proc(Some(child))
    }

    fn endpoints(&self) -> Vec<String> {
        self.clients
            .iter()
            .map(|c| format!("127.0.0.1:{c}"))
            .collect()
    }

    /// Waits until the cluster takes a write (it has a leader).
    async fn wait_healthy(&self) {
        let eps = self.endpoints();
        until(Duration::from_secs(20), "etcd takes writes", async || {
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect(&eps, None),
            )
            .await
            else {
                return false;
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(1), c.put("/health", "x", None)).await,
                Ok(Ok(_))
            )
        })
        .await;
    }

    fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    async fn restart_all(&mut self) {
        for i in 0..3 {
            self.members[i] = self.spawn(i);
        }
        self.wait_healthy().await;
    }
}

//------------ Meridian -----------------------------------------------------

/// One Meridian instance: its directory, ports and process.
struct Instance {
    name: String,
    dir: tempfile::TempDir,
    dns: SocketAddr,
    admin: SocketAddr,
    proc: Proc,
}

/// The zone: `east` probed at `target`, `west` unprobed; `www` answers
/// with the first usable of east, west. `extra` adds static records (a
/// different config generation).
fn zone(target: SocketAddr, extra: &str) -> String {
    format!(
        r#"origin = "{ORIGIN}"
ns = ["ns1.{ORIGIN}"]
[soa]
rname = "hostmaster.{ORIGIN}"
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
{extra}
[datacenters.east]
addresses = ["{EAST}"]
probe = {{ type = "tcp", targets = ["{target}"], interval = "200ms", timeout = "150ms", rise = 1, fall = 2, jitter = 0.0 }}
[datacenters.west]
addresses = ["{WEST}"]
[services.www]
policy = "failover"
datacenters = ["east", "west"]
ttl = 5
"#
    )
}

impl Instance {
    /// Writes the configs of instance `name` and starts it.
    async fn start(name: &str, etcd: &Etcd, prefix: &str, quorum: &str, zone_text: &str) -> Self {
        let endpoints = etcd.endpoints();
        Self::start_with(name, &endpoints, prefix, quorum, zone_text, "").await
    }

    /// Like [`Self::start`], with any endpoints and `extra` lines in
    /// `[cluster]` (TLS, auth).
    async fn start_with(
        name: &str,
        endpoints: &[String],
        prefix: &str,
        quorum: &str,
        zone_text: &str,
        extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/c.test.toml"), zone_text).unwrap();
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
        let config = format!(
            r#"listen = ["{dns}"]
threads = 1
state_file = "state.json"
[admin]
listen = "{admin}"
# The load test sends hundreds of queries a second from one address.
[rrl]
enabled = false
[cluster]
endpoints = [{}]
prefix = "{prefix}"
name = "{name}"
quorum = {quorum}
lease_ttl = "2s"
{}{extra}
"#,
            endpoints.join(", "),
            if extra.contains("dial_timeout") {
                ""
            } else {
                "dial_timeout = \"1s\"\n"
            }
        );
        std::fs::write(dir.path().join("meridian.toml"), config).unwrap();
        let mut i = Self {
            name: name.to_string(),
            dir,
            dns,
            admin,
            proc: Proc(None),
        };
        i.run().await;
        i
    }

    /// Starts (or restarts) the process and waits until it answers.
    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("meridian.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("meridian.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meridian starts");
        self.proc = Proc(Some(child));
        let admin = self.admin;
        let name = self.name.clone();
        until(
            Duration::from_secs(20),
            &format!("instance {name} answers"),
            async || http(admin, "GET", "/health", "").await.is_some(),
        )
        .await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meridian.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Value {
        let (_, body) = http(self.admin, "GET", path, "")
            .await
            .unwrap_or_else(|| panic!("GET {path} on {}", self.name));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (code, body) = http(self.admin, "POST", path, body)
            .await
            .unwrap_or_else(|| panic!("POST {path} on {}", self.name));
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The addresses `www` answers with now.
    async fn www(&self) -> Vec<String> {
        a_records(&ask(self.dns, 1).await.expect("an answer"))
    }

    /// The datacenter's entry in `/status`.
    async fn dc(&self, dc: &str) -> Value {
        let status = self.get("/status").await;
        status["zones"][0]["datacenters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == dc)
            .cloned()
            .unwrap()
    }
}

/// A minimal HTTP/1.1 exchange: (status, body), `None` when the server
/// cannot be reached.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(format!("www.{ORIGIN}")).unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// One UDP query for www; `None` when no answer comes within a second.
async fn ask(dns: SocketAddr, id: u16) -> Option<Message> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&query(id), dns).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// A TCP listener the test controls: the probe target of `east`.
fn backend() -> (std::net::TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A loopback address nobody listens on: probes there fail.
fn dead_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn prefix() -> String {
    format!(
        "/meridian-test-{}-{}/",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

/// Three instances a, b, c on the same zone (or `zones[i]` each).
async fn three(etcd: &Etcd, quorum: &str, zones: [&str; 3]) -> Vec<Instance> {
    let p = prefix();
    let mut out = Vec::new();
    for (name, z) in ["a", "b", "c"].into_iter().zip(zones) {
        out.push(Instance::start(name, etcd, &p, quorum, z).await);
    }
    // Everyone sees everyone.
    for i in &out {
        until(
            Duration::from_secs(10),
            "three live instances",
            async || i.get("/cluster").await["instances_live"] == 3,
        )
        .await;
    }
    out
}

/// Prints every instance's log if the test fails.
struct Logs(Vec<(String, PathBuf)>);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, path) in &self.0 {
                let log = std::fs::read_to_string(path).unwrap_or_default();
                eprintln!("--- log of {name} ---\n{log}");
            }
        }
    }
}

fn on_failure_logs(instances: &[Instance]) -> Logs {
    Logs(
        instances
            .iter()
            .map(|i| (i.name.clone(), i.dir.path().join("meridian.log")))
            .collect(),
    )
}

//------------ Tests ----------------------------------------------------------

/// A drain through A is answered by B and C within 1 s, with who, when
/// and where in `/status`; it survives a restart of all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_through_one_instance_reaches_every_instance_and_survives_restarts() {
    let etcd = Etcd::start().await;
    let (_backend, target) = backend();
    let z = zone(target, "");
    let mut all = three(&etcd, "\"majority\"", [&z, &z, &z]).await;
    let _logs = on_failure_logs(&all);
    for i in &all {
        until(Duration::from_secs(5), "east answers", async || {
            i.www().await == [EAST]
        })
        .await;
    }
    let view = all[0].get("/cluster").await;
    assert_eq!(view["generations_differ"], false, "{view}");
    assert_eq!(view["connected"], true);
    let selves: Vec<bool> = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["self"].as_bool().unwrap())
        .collect();
    assert_eq!(selves, [true, false, false], "{view}");

    let started = Instant::now();
    let (code, body) = all[0]
        .post(
            &format!("/datacenters/{ORIGIN}/east/drain"),
            r#"{"by": "alice"}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for i in &all {
        until(
            Duration::from_secs(1),
            "the drain is answered everywhere",
            async || i.www().await == [WEST],
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    let dc = all[2].dc("east").await;
    assert_eq!(dc["override"], "drain", "{dc}");
    let source = &dc["cluster"]["override_source"];
    assert_eq!(source["by"], "alice", "{dc}");
    assert_eq!(source["instance"], "a", "{dc}");
    assert!(source["at"].as_str().unwrap().ends_with('Z'));

    // Every instance down, then up again: etcd still holds the drain.
    for i in all.iter_mut() {
        i.proc.kill();
    }
    for i in all.iter_mut() {
        i.run().await;
    }
    for i in &all {
        assert_eq!(i.www().await, [WEST], "{} after the restart", i.name);
        assert!(
            i.log()
                .contains("shared overrides and votes read from etcd"),
            "{}",
            i.log()
        );
    }
    // The state file is the local cache of the shared overrides.
    let cache = std::fs::read_to_string(all[1].dir.path().join("state.json")).unwrap();
    assert!(cache.contains("\"drain\""), "{cache}");
    // With who set it (state file version 2).
    assert!(
        cache.contains("\"version\": 2") && cache.contains("\"by\": \"alice\""),
        "{cache}"
    );

    // Undrain through C, the default `by` is the client's address.
    let (code, _) = all[2]
        .post(&format!("/datacenters/{ORIGIN}/east/undrain"), "")
        .await;
    assert_eq!(code, 200);
    for i in &all {
        until(
            Duration::from_secs(1),
            "the undrain everywhere",
            async || i.www().await == [EAST],
        )
        .await;
    }
    let (code, _) = all[1]
        .post(&format!("/datacenters/{ORIGIN}/east/force-up"), "")
        .await;
    assert_eq!(code, 200);
    until(Duration::from_secs(1), "force-up seen by a", async || {
        all[0].dc("east").await["cluster"]["override_source"]["by"] == "127.0.0.1"
    })
    .await;
}

/// One instance cannot reach east's backend: with `majority` every
/// instance keeps answering east. When the backend really dies, all drop
/// it within the detection window plus 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vantage_point_cannot_fail_a_datacenter_over_but_a_real_failure_does() {
    let etcd = Etcd::start().await;
    let (backend, target) = backend();
    let good = zone(target, "");
    // C probes a port nobody listens on: its own view of east is down.
    let blind = zone(dead_target(), "");
    let all = three(&etcd, "\"majority\"", [&good, &good, &blind]).await;
    let _logs = on_failure_logs(&all);
    until(
        Duration::from_secs(5),
        "c sees east down itself",
        async || all[2].dc("east").await["cluster"]["own"] == "down",
    )
    .await;
    for i in &all {
        until(
            Duration::from_secs(3),
            "east kept by the majority",
            async || i.www().await == [EAST],
        )
        .await;
    }
    let dc = all[2].dc("east").await;
    let c = &dc["cluster"];
    assert_eq!(c["shared"], "up", "{dc}");
    assert_eq!(c["fallback"], false, "{dc}");
    assert_eq!(c["votes"]["c"], "down", "{dc}");
    assert_eq!(c["votes"]["a"], "up", "{dc}");
    assert_eq!(c["down_votes"], 1, "{dc}");
    assert_eq!(dc["usable"], true, "{dc}");

    // The backend dies: detection is fall (2) x interval (200 ms) plus a
    // probe timeout and a heartbeat write.
    drop(backend);
    let detection = Duration::from_millis(2 * 200 + 150);
    let died = Instant::now();
    for i in &all {
        until(
            detection + Duration::from_secs(1),
            "east dropped everywhere",
            async || i.www().await == [WEST],
        )
        .await;
    }
    assert!(
        died.elapsed() <= detection + Duration::from_secs(1),
        "{:?}",
        died.elapsed()
    );
}

/// One instance is killed: its lease expires and its votes stop counting.
/// With quorum = "any", C's lone down vote drains east for everyone until
/// C dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_votes_expire_with_its_lease() {
    let etcd = Etcd::start().await;
    let (_backend, target) = backend();
    let good = zone(target, "");
    let blind = zone(dead_target(), "");
    let mut all = three(&etcd, "\"any\"", [&good, &good, &blind]).await;
    let _logs = on_failure_logs(&all);
    for i in &all[..2] {
        until(Duration::from_secs(5), "c's vote counts", async || {
            i.www().await == [WEST]
        })
        .await;
    }
    all[2].proc.kill();
    let killed = Instant::now();
    for i in &all[..2] {
        until(Duration::from_secs(6), "c's lease expired", async || {
            i.get("/cluster").await["instances_live"] == 2
        })
        .await;
        until(
            Duration::from_secs(1),
            "east back without c's vote",
            async || i.www().await == [EAST],
        )
        .await;
        let dc = i.dc("east").await;
        assert!(dc["cluster"]["votes"].get("c").is_none(), "{dc}");
    }
    // Not before the 2 s lease could expire.
    assert!(
        killed.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        killed.elapsed()
    );
}

/// One etcd member dies: nothing changes, overrides still work. All of
/// etcd dies: every instance keeps answering with its last state and its
/// own probes, with no lost query under load; an override is refused
/// (503) and changes nothing. etcd comes back: they reconverge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_failures_fail_static_and_reconverge() {
    let mut etcd = Etcd::start().await;
    let (_backend, target) = backend();
    let z = zone(target, "");
    let mut all = three(&etcd, "\"majority\"", [&z, &z, &z]).await;
    let _logs = on_failure_logs(&all);

    // One member dies (perhaps the leader: then etcd elects another,
    // and sessions on the dead member move to a live one). Answers do
    // not change, and the instances carry on.
    etcd.kill(0);
    for i in &all {
        assert_eq!(i.www().await, [EAST], "{}: nothing changes", i.name);
    }
    for i in &all {
        until(
            Duration::from_secs(10),
            "connected through the others",
            async || i.get("/cluster").await["connected"] == true,
        )
        .await;
        assert_eq!(i.www().await, [EAST], "{}: nothing changes", i.name);
    }
    let (code, body) = all[1]
        .post(&format!("/datacenters/{ORIGIN}/east/drain"), "")
        .await;
    assert_eq!(code, 200, "with one member down: {body}");
    for i in &all {
        until(
            Duration::from_secs(3),
            "drain with a member down",
            async || i.www().await == [WEST],
        )
        .await;
    }
    for i in &all {
        assert_eq!(i.get("/cluster").await["instances_live"], 3);
    }

    // All of etcd dies.
    etcd.kill(1);
    etcd.kill(2);
    for i in &all {
        until(
            Duration::from_secs(10),
            "the instance notices",
            async || i.get("/cluster").await["connected"] == false,
        )
        .await;
        let metrics = http(i.admin, "GET", "/metrics", "").await.unwrap().1;
        assert!(
            metrics.contains("meridian_cluster_connected 0"),
            "{metrics}"
        );
    }
    // C restarts while etcd is down: the state file (the local cache)
    // brings back the drain and who set it, when and through which
    // instance.
    let before = all[2].dc("east").await["cluster"]["override_source"].clone();
    assert_eq!(before["instance"], "b", "{before}");
    all[2].proc.kill();
    all[2].run().await;
    assert!(
        all[2]
            .log()
            .contains("starting with the overrides of the state file"),
        "{}",
        all[2].log()
    );
    let dc = all[2].dc("east").await;
    assert_eq!(dc["override"], "drain", "{dc}");
    assert_eq!(dc["cluster"]["override_source"], before, "{dc}");
    let view = all[2].get("/cluster").await;
    assert_eq!(view["connected"], false, "{view}");
    assert_eq!(view["overrides"][0]["by"], before["by"], "{view}");
    assert_eq!(view["overrides"][0]["at"], before["at"], "{view}");
    // Under load, every query is answered, with the last shared state.
    let mut load = Vec::new();
    for (n, i) in all.iter().enumerate() {
        let dns = i.dns;
        load.push(tokio::spawn(async move {
            let (mut answered, mut west) = (0, 0);
            for q in 0..400u16 {
                if let Some(m) = ask(dns, (n as u16) << 12 | q).await {
                    answered += 1;
                    west += usize::from(a_records(&m) == [WEST]);
                }
            }
            (answered, west)
        }));
    }
    for l in load {
        assert_eq!(l.await.unwrap(), (400, 400), "answered, and still drained");
    }
    let (code, body) = all[0]
        .post(&format!("/datacenters/{ORIGIN}/east/undrain"), "")
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not stored cluster-wide"),
        "{body}"
    );
    assert_eq!(all[0].www().await, [WEST], "nothing changed");
    // Own probes still count: peers' last votes are kept (fail static).
    assert_eq!(all[0].get("/cluster").await["instances_live"], 3);

    etcd.restart_all().await;
    for i in &all {
        until(Duration::from_secs(15), "reconnected", async || {
            i.get("/cluster").await["connected"] == true
        })
        .await;
    }
    let (code, body) = all[0]
        .post(&format!("/datacenters/{ORIGIN}/east/undrain"), "")
        .await;
    assert_eq!(code, 200, "{body}");
    for i in &all {
        until(Duration::from_secs(1), "reconverged", async || {
            i.www().await == [EAST]
        })
        .await;
    }
}

/// Two instances run different configs: `/cluster` flags it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_config_generations_are_flagged() {
    let etcd = Etcd::start().await;
    let (_backend, target) = backend();
    let z = zone(target, "");
    let other = zone(target, "extra = [{ type = \"A\", value = \"192.0.2.99\" }]");
    let all = three(&etcd, "2", [&z, &z, &other]).await;
    let _logs = on_failure_logs(&all);
    let view = all[0].get("/cluster").await;
    assert_eq!(view["generations_differ"], true, "{view}");
    assert_eq!(
        view["differing_instances"],
        serde_json::json!(["c"]),
        "{view}"
    );
    let gens: Vec<&str> = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["generation"].as_str().unwrap())
        .collect();
    assert_eq!(gens[0], gens[1], "a and b serve the same zones");
    assert_ne!(gens[0], gens[2]);
    let metrics = http(all[0].admin, "GET", "/metrics", "").await.unwrap().1;
    assert!(
        metrics.contains("meridian_cluster_generation_mismatch 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_cluster_instances_live 3"),
        "{metrics}"
    );

    // C gets the same zones and reloads: the flag clears everywhere, and
    // a quorum change applies without a restart.
    std::fs::write(all[2].dir.path().join("zones/c.test.toml"), &z).unwrap();
    let toml = all[2].dir.path().join("meridian.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("quorum = 2", "quorum = \"all\"")).unwrap();
    let (code, body) = all[2].post("/reload", "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["needs_restart"], serde_json::json!([]), "{body}");
    for i in &all {
        until(Duration::from_secs(3), "generations agree", async || {
            i.get("/cluster").await["generations_differ"] == false
        })
        .await;
    }
    assert_eq!(all[2].get("/cluster").await["quorum"], "all");
}

/// Alone in a cluster (its peers not started), `majority` falls back to
/// the own view and says so in /status and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_observers_fall_back_to_the_own_view_visibly() {
    let etcd = Etcd::start().await;
    let z = zone(dead_target(), "");
    let a = Instance::start("a", &etcd, &prefix(), "\"majority\"", &z).await;
    let _logs = on_failure_logs(std::slice::from_ref(&a));
    // The bound only caps a wait (detection takes fall × interval); it
    // is wide because a loaded CI machine once missed 5 s here.
    until(Duration::from_secs(15), "own view decides", async || {
        a.www().await == [WEST]
    })
    .await;
    let dc = a.dc("east").await;
    assert_eq!(dc["cluster"]["fallback"], true, "{dc}");
    assert_eq!(dc["cluster"]["live_observers"], 1, "{dc}");
    let metrics = http(a.admin, "GET", "/metrics", "").await.unwrap().1;
    assert!(
        metrics.contains(&format!(
            "meridian_cluster_quorum_fallback{{zone=\"{ORIGIN}\",datacenter=\"east\"}} 1"
        )),
        "{metrics}"
    );
}

//------------ TLS and RBAC ---------------------------------------------------

/// etcd's root password in the TLS tests.
const ROOT_PW: &str = "root-pw-0xR00T";
/// The password of etcd user `meridian` (RBAC: the test prefix only).
const MERIDIAN_PW: &str = "meridian-pw-0x5EC7E7";
/// A password that is not `meridian`'s.
const WRONG_PW: &str = "wrong-pw-0xBAD";

/// Certificates made for one test with rcgen, as PEM files in a
/// directory: `ca.pem`, the etcd server's `server.pem`/`server-key.pem`
/// (for 127.0.0.1), a client's `client.pem`/`client-key.pem`, both signed
/// by that CA, and `other-ca.pem`, a CA that signed neither.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, Issuer::new(p, key))
        };
        let (ca_cert, issuer) = ca("meridian test CA");
        write("ca.pem", &ca_cert.pem());
        write("other-ca.pem", &ca("some other CA").0.pem());
        let leaves = [
            ("server", vec!["127.0.0.1".to_string()], "etcd"),
            // Not an etcd user: what authorises Meridian is its password.
            ("client", Vec::new(), "meridian-host"),
        ];
        for (name, names, cn) in leaves {
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().unwrap();
            write(
                &format!("{name}.pem"),
                &p.signed_by(&key, &issuer).unwrap().pem(),
            );
            write(&format!("{name}-key.pem"), &key.serialize_pem());
        }
        write("meridian.pw", &format!("{MERIDIAN_PW}\n"));
        write("wrong.pw", WRONG_PW);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// The test's own client options: the right CA, and the client
    /// certificate when etcd asks for one.
    fn options(&self, mtls: bool) -> etcd_client::ConnectOptions {
        use etcd_client::{Certificate, Identity, TlsOptions};
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(self.read("ca.pem")));
        if mtls {
            tls = tls.identity(Identity::from_pem(
                self.read("client.pem"),
                self.read("client-key.pem"),
            ));
        }
        etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2))
    }
}

/// A one-member etcd that serves clients over TLS only (and, with
/// `mtls`, asks each for a certificate signed by the test CA), with RBAC
/// on: user `root`, and user `meridian` whose role may read and write
/// `prefix` and nothing else.
struct TlsEtcd {
    _dir: tempfile::TempDir,
    client: u16,
    mtls: bool,
    _member: Proc,
}

impl TlsEtcd {
    async fn start(pki: &Pki, mtls: bool, prefix: &str) -> Self {
        let found = Command::new("etcd").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "the etcd binary is missing: install Debian's etcd-server (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let url = format!("https://127.0.0.1:{client}");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "m0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--cert-file", &pki.path("server.pem")])
            .args(["--key-file", &pki.path("server-key.pem")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &format!("m0=http://127.0.0.1:{peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        if mtls {
            cmd.arg("--client-cert-auth")
                .args(["--trusted-ca-file", &pki.path("ca.pem")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        let etcd = Self {
            _dir: dir,
            client,
            mtls,
            _member: Proc(Some(child)),
        };
        let endpoint = etcd.endpoint();
        let options = pki.options(mtls);
        let mut c = None;
        until(
            Duration::from_secs(20),
            "TLS etcd takes writes",
            async || {
                let Ok(Ok(mut client)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    etcd_client::Client::connect([&endpoint], Some(options.clone())),
                )
                .await
                else {
                    return false;
                };
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(1), client.put("/health", "x", None))
                        .await,
                    Ok(Ok(_))
                );
                c = ok.then_some(client);
                ok
            },
        )
        .await;
        let mut c = c.unwrap();
        c.user_add("root", ROOT_PW, None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("meridian").await.unwrap();
        c.role_grant_permission(
            "meridian",
            etcd_client::Permission::read_write(prefix).with_prefix(),
        )
        .await
        .unwrap();
        c.user_add("meridian", MERIDIAN_PW, None).await.unwrap();
        c.user_grant_role("meridian", "meridian").await.unwrap();
        c.auth_enable().await.unwrap();
        etcd
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client)
    }

    /// A client as etcd's root user.
    async fn root(&self, pki: &Pki) -> etcd_client::Client {
        let options = pki.options(self.mtls).with_user("root", ROOT_PW);
        etcd_client::Client::connect([self.endpoint()], Some(options))
            .await
            .unwrap()
    }
}

/// `[cluster]` lines for TLS with `ca` (and the client certificate when
/// `cert`), as user meridian with the password in `password`.
fn tls_lines(pki: &Pki, ca: &str, cert: bool, password: &str) -> String {
    let mut out = format!(
        "ca_file = {:?}\nusername = \"meridian\"\npassword_file = {:?}\n",
        pki.path(ca),
        pki.path(password)
    );
    if cert {
        out += &format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            pki.path("client.pem"),
            pki.path("client-key.pem")
        );
    }
    out
}

/// A drain through `i` is stored in etcd (read back as root), answered,
/// and an undrain deletes it.
async fn drain_round_trip(i: &Instance, root: &mut etcd_client::Client, prefix: &str) {
    let key = format!("{prefix}overrides/{ORIGIN}/east");
    until(Duration::from_secs(5), "east answers", async || {
        i.www().await == [EAST]
    })
    .await;
    let (code, body) = i
        .post(
            &format!("/datacenters/{ORIGIN}/east/drain"),
            r#"{"by": "alice"}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let stored = root.get(key.as_str(), None).await.unwrap();
    let value: Value = serde_json::from_slice(stored.kvs()[0].value()).unwrap();
    assert_eq!(value["by"], "alice", "{value}");
    assert_eq!(value["instance"], i.name, "{value}");
    until(
        Duration::from_secs(1),
        "the drain is answered",
        async || i.www().await == [WEST],
    )
    .await;
    let (code, body) = i
        .post(&format!("/datacenters/{ORIGIN}/east/undrain"), "")
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(root.get(key.as_str(), None).await.unwrap().kvs().is_empty());
    until(
        Duration::from_secs(1),
        "the undrain is answered",
        async || i.www().await == [EAST],
    )
    .await;
}

/// Waits until `i` has tried etcd and failed; returns `/cluster`'s
/// `last_error`, after checking `connected` is false.
async fn refused(i: &Instance) -> String {
    until(Duration::from_secs(10), "a failed attempt", async || {
        i.get("/cluster").await["last_error"].is_string()
    })
    .await;
    let view = i.get("/cluster").await;
    assert_eq!(view["connected"], false, "{view}");
    view["last_error"].as_str().unwrap().to_string()
}

/// The passwords appear nowhere an operator or a log reader looks.
async fn no_password_shown(i: &Instance) {
    let mut seen = i.log();
    for path in ["/status", "/cluster", "/metrics"] {
        seen += &http(i.admin, "GET", path, "").await.unwrap().1;
    }
    for pw in [MERIDIAN_PW, WRONG_PW, ROOT_PW] {
        assert!(!seen.contains(pw), "{}: the password is shown", i.name);
    }
}

/// etcd asks for client certificates and enforces RBAC. Meridian with
/// the right CA, certificate and password connects and a drain
/// round-trips through etcd. A wrong CA and a missing client certificate
/// are refused, and `/cluster` says why in TLS terms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_rbac_connects_and_says_why_when_refused() {
    let pki = Pki::new();
    let p = prefix();
    let etcd = TlsEtcd::start(&pki, true, &p).await;
    let (_backend, target) = backend();
    let z = zone(target, "");
    let endpoints = [etcd.endpoint()];
    let start = |name: &'static str, extra: String| {
        let (endpoints, p, z) = (&endpoints, &p, &z);
        async move { Instance::start_with(name, endpoints, p, "\"majority\"", z, &extra).await }
    };
    let good = start("good", tls_lines(&pki, "ca.pem", true, "meridian.pw")).await;
    let wrong_ca = start(
        "wrong-ca",
        tls_lines(&pki, "other-ca.pem", true, "meridian.pw"),
    )
    .await;
    let no_cert = start("no-cert", tls_lines(&pki, "ca.pem", false, "meridian.pw")).await;
    let all = [good, wrong_ca, no_cert];
    let _logs = on_failure_logs(&all);
    let [good, wrong_ca, no_cert] = &all;

    until(Duration::from_secs(10), "good connects", async || {
        good.get("/cluster").await["connected"] == true
    })
    .await;
    let mut root = etcd.root(&pki).await;
    drain_round_trip(good, &mut root, &p).await;

    // Which member, what is wrong, and the setting that fixes it.
    let why = refused(wrong_ca).await;
    assert!(why.starts_with(&endpoints[0]), "{why}");
    assert!(
        why.contains("TLS: etcd's certificate is not signed by the CA in ca_file")
            && why.contains("UnknownIssuer"),
        "{why}"
    );
    // etcd's refusal of a client without a certificate reaches tonic as
    // "operation was canceled: connection closed"; the diagnosis names it.
    let why = refused(no_cert).await;
    assert!(
        why.contains("TLS: etcd asks for a client certificate") && why.contains("cert_file"),
        "{why}"
    );
    assert!(!why.contains("canceled"), "{why}");
    // An override through a refused instance: 503, saying why.
    let (code, body) = wrong_ca
        .post(&format!("/datacenters/{ORIGIN}/east/drain"), "")
        .await;
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("not signed by the CA in ca_file"), "{error}");
    assert!(
        wrong_ca.log().contains("not signed by the CA in ca_file"),
        "the WARN says why too"
    );
    for i in &all {
        no_password_shown(i).await;
    }
}

/// etcd serves TLS (no client certificates) with RBAC: the CA and the
/// password are enough; a wrong password, a prefix the user may not
/// write, and no user at all are each refused as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_with_a_password_connects_and_auth_errors_are_named() {
    let pki = Pki::new();
    let p = prefix();
    let etcd = TlsEtcd::start(&pki, false, &p).await;
    let (_backend, target) = backend();
    let z = zone(target, "");
    let endpoints = [etcd.endpoint()];
    let good = Instance::start_with(
        "good",
        &endpoints,
        &p,
        "\"majority\"",
        &z,
        &tls_lines(&pki, "ca.pem", false, "meridian.pw"),
    )
    .await;
    let bad_pw = Instance::start_with(
        "bad-pw",
        &endpoints,
        &p,
        "\"majority\"",
        &z,
        &tls_lines(&pki, "ca.pem", false, "wrong.pw"),
    )
    .await;
    // The right password, but a prefix its role may not write.
    let elsewhere = Instance::start_with(
        "elsewhere",
        &endpoints,
        "/not-meridian/",
        "\"majority\"",
        &z,
        &tls_lines(&pki, "ca.pem", false, "meridian.pw"),
    )
    .await;
    // No user at all, while etcd has authentication on.
    let anonymous = Instance::start_with(
        "anonymous",
        &endpoints,
        &p,
        "\"majority\"",
        &z,
        &format!("ca_file = {:?}", pki.path("ca.pem")),
    )
    .await;
    // Plain HTTP/2 to a TLS port (no ca_file).
    let plain = Instance::start_with(
        "plain",
        &[endpoints[0].trim_start_matches("https://").to_string()],
        &p,
        "\"majority\"",
        &z,
        "",
    )
    .await;
    let all = [good, bad_pw, elsewhere, anonymous, plain];
    let _logs = on_failure_logs(&all);
    let [good, bad_pw, elsewhere, anonymous, plain] = &all;
    until(Duration::from_secs(10), "good connects", async || {
        good.get("/cluster").await["connected"] == true
    })
    .await;
    let mut root = etcd.root(&pki).await;
    drain_round_trip(good, &mut root, &p).await;
    let why = refused(bad_pw).await;
    assert!(
        why.contains("authentication failed") && why.contains("password_file"),
        "{why}"
    );
    assert!(!why.contains("TLS"), "TLS is fine: {why}");
    let why = refused(elsewhere).await;
    assert!(
        why.contains("permission denied")
            && why.contains("etcd user meridian needs readwrite on the key prefix \"/not-meridian/\" (etcdctl role grant-permission ROLE --prefix=true readwrite /not-meridian/)"),
        "{why}"
    );
    let why = refused(plain).await;
    assert!(
        why.contains("etcd serves TLS on this port: set ca_file"),
        "{why}"
    );
    let why = refused(anonymous).await;
    assert!(
        why.contains("etcd has authentication enabled: set username and password_file"),
        "{why}"
    );
    for i in &all {
        no_password_shown(i).await;
    }
}

//------------ Shutdown -------------------------------------------------------

/// etcd accepts connections but never answers (a hung member, a
/// black-holing firewall): SIGTERM still stops Meridian at once, not after
/// the etcd call in flight times out (dial_timeout, here 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_silent_etcd() {
    // Connections complete in the kernel's backlog and are never read.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoints = [silent.local_addr().unwrap().to_string()];
    let z = zone(dead_target(), "");
    let mut i = Instance::start_with(
        "a",
        &endpoints,
        &prefix(),
        "\"majority\"",
        &z,
        "dial_timeout = \"5s\"",
    )
    .await;
    let _logs = on_failure_logs(std::slice::from_ref(&i));
    let why = refused(&i).await;
    assert!(why.contains("no answer within 5s"), "{why}");
    // The next session has started (after a 100 ms backoff): its first
    // call is in flight.
    until(Duration::from_secs(2), "a second session", async || {
        i.get("/cluster").await["reconnects"] == 1
    })
    .await;
    let child = i.proc.0.as_mut().unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's PID, which has not been reaped
    // (so the PID is still ours).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let sent = Instant::now();
    until(
        Duration::from_secs(2),
        "meridian exits on SIGTERM",
        async || matches!(child.try_wait(), Ok(Some(_))),
    )
    .await;
    let status = child.try_wait().unwrap().unwrap();
    assert!(status.success(), "{status}: {}", sent.elapsed().as_millis());
}

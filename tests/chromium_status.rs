//! The live status page in a real browser (issue 10): headless Chromium,
//! driven through chromedriver's WebDriver HTTP API, loads the page from
//! the real admin listener of a real server whose HTTP probes hit real
//! loopback backends. The test stops a backend and waits for the page to
//! show that datacenter down, starts it again, clicks Drain and sees the
//! DNS answers (real UDP queries) move and the page show the override.
//! A screenshot goes to `target/artifacts/status-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh
//! installs them); without them the test fails and says how to install
//! them.

#![allow(missing_docs, unreachable_pub)]

#[path = "integration/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use harness::{Setup, TestServer, a_answers};

/// Bound on each awaited condition (page state, DNS answers).
const WAIT: Duration = Duration::from_secs(20);
/// How often a condition is checked again.
const RECHECK: Duration = Duration::from_millis(100);
/// Bound on one WebDriver command (starting the browser included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Two datacenters with HTTP probes on `east` and `west`; `www` prefers
/// east.
fn zone(east: SocketAddr, west: SocketAddr) -> String {
    let dc = |name: &str, address: &str, target: SocketAddr| {
        format!(
            "[datacenters.{name}]\naddresses = [\"{address}\"]\n\
             [datacenters.{name}.probe]\ntype = \"http\"\ntargets = [\"{target}\"]\n\
             path = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
             rise = 2\nfall = 2\njitter = 0.0\n"
        )
    };
    format!(
        "origin = \"status.test.\"\nns = [\"ns1.status.test.\"]\n\
         [soa]\nrname = \"hostmaster.status.test.\"\nserial = 1\n\
         [records]\nns1 = [{{ type = \"A\", value = \"192.0.2.53\" }}]\n\
         {}{}\
         [services.www]\npolicy = \"failover\"\ndatacenters = [\"east\", \"west\"]\nttl = 30\n",
        dc("east", "192.0.2.1", east),
        dc("west", "192.0.2.2", west),
    )
}

//------------ Backends ---------------------------------------------------------

/// A real HTTP backend answering 200 to everything until stopped.
struct Backend {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                        )
                        .await;
                });
            }
        });
        Self {
            addr,
            task: Some(task),
        }
    }

    /// Closes the listening socket: connections are refused.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

//------------ chromedriver -------------------------------------------------------

/// A chromedriver we started, and one browser session on it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// The browser's fresh profile directory, which names its processes.
    profile: PathBuf,
}

impl Drop for Browser {
    /// A test that fails before [`Browser::quit`] leaves Chromium
    /// running (chromedriver's own death does not end it): end the
    /// browser processes this test started, found by their profile.
    fn drop(&mut self) {
        end_browser(&self.profile);
    }
}

/// Sends SIGTERM to each Chromium browser process (not its helpers,
/// which follow it) whose command line names `profile`: only the one
/// this test started has that fresh directory.
fn end_browser(profile: &Path) {
    let wanted = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let ours = args.contains(&wanted.as_bytes());
        let helper = args.iter().any(|a| a.starts_with(b"--type="));
        if ours && !helper {
            // SAFETY: kill(2) with a PID just read from /proc whose
            // command line names this test's own fresh profile directory.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless
    /// Chromium session with a fresh profile in `profile`.
    async fn start(profile: &Path) -> Self {
        let spawned = Command::new("chromedriver")
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut driver = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "install chromedriver and chromium (apt-get install chromium chromium-driver, \
                 or run scripts/test.sh): {e}"
            ),
            Err(e) => panic!("cannot start chromedriver: {e}"),
        };
        // "ChromeDriver was started successfully on port 36723."
        let stdout = driver.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("chromedriver output") {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .expect("chromedriver starts within the bound")
        .expect("chromedriver names its port");
        // Keep reading, so chromedriver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()
            .expect("HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            http,
            profile: profile.to_path_buf(),
        };
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--window-size=1180,760".to_string(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let created = browser
            .command(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": { "binary": chromium_binary(), "args": args },
                    }}
                })),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`, panicking on errors.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("WebDriver answer");
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{url}: {status}: not JSON ({e}): {text}"));
        assert!(status.is_success(), "{url}: {status}: {text}");
        value["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn open(&self, url: &str) {
        self.command(
            reqwest::Method::POST,
            &self.path("/url"),
            Some(json!({ "url": url })),
        )
        .await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            &self.path("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The W3C element reference of the element `css` selects.
    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                &self.path("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        // The W3C element reference key.
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Clicks the element `css` selects, as a user would.
    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element `css` selects.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The page as a PNG.
    async fn screenshot(&self) -> Vec<u8> {
        let b64 = self
            .command(reqwest::Method::GET, &self.path("/screenshot"), None)
            .await;
        base64_decode(b64.as_str().expect("base64 PNG"))
    }

    /// Waits (bounded) until `script` returns `true` in the page; panics
    /// with `what` and the page's last answer otherwise.
    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.eval(script).await;
            if got == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let conn = self
                    .eval("return document.getElementById('conn').textContent")
                    .await;
                panic!("page: timed out waiting for {what}; last {got}; connection {conn}");
            }
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// Ends the session (Chromium quits) and then chromedriver, by PID.
    async fn quit(mut self) {
        let path = self.path("");
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.http.delete(format!("{}{path}", self.base)).send(),
        )
        .await;
        if let Some(pid) = self.driver.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the PID of our own child, not yet reaped
            // (it is waited for below), so the PID cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.driver.wait())
            .await
            .is_err()
        {
            let _ = self.driver.kill().await;
        }
    }
}

/// Debian's chromium, where chromedriver finds it too.
fn chromium_binary() -> String {
    for path in ["/usr/bin/chromium", "/usr/lib/chromium/chromium"] {
        if Path::new(path).exists() {
            return path.to_string();
        }
    }
    panic!("install chromium (apt-get install chromium chromium-driver, or run scripts/test.sh)");
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Where screenshots go: `target/artifacts/`.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("create target/artifacts");
    dir
}

//------------ Helpers ---------------------------------------------------------------

/// `www.status.test` A over UDP from 127.0.0.1.
async fn www(s: &TestServer) -> Vec<String> {
    a_answers(&s.ask("www.status.test.", RecordType::A, None).await)
}

/// Waits (bounded) until `www` answers `expected`.
async fn answers_become(s: &TestServer, expected: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = www(s).await;
        if got == [expected] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "DNS: www still answers {got:?}, not {expected}"
        );
        tokio::time::sleep(RECHECK).await;
    }
}

/// The backends, east on 127.0.0.2 and west on 127.0.0.3, and the server
/// on their zone with `server_toml`.
async fn start(server_toml: &str) -> (Backend, Backend, TestServer) {
    let east = Backend::start("127.0.0.2:0".parse().unwrap()).await;
    let west = Backend::start("127.0.0.3:0".parse().unwrap()).await;
    let zone = zone(east.addr, west.addr);
    let s = TestServer::start_with(Setup {
        zones: &[("status.test.toml", &zone)],
        server_toml,
        ..Setup::default()
    })
    .await;
    (east, west, s)
}

/// Clicks east's `action` button on the page, then waits until `www`
/// answers `answer` and the page shows east in `state`.
async fn press_on_east(
    browser: &Browser,
    s: &TestServer,
    action: &str,
    answer: &str,
    what: &str,
    state: &str,
) {
    browser
        .click(&format!(
            "tr.dc[data-dc=\"east\"] button[data-action=\"{action}\"]"
        ))
        .await;
    answers_become(s, answer).await;
    browser.until(what, &dc_shows("east", state)).await;
}

/// JavaScript: whether the page's row for datacenter `dc` shows `state`.
fn dc_shows(dc: &str, state: &str) -> String {
    format!(
        "const r = document.querySelector('tr.dc[data-dc=\"{dc}\"]'); \
         return r !== null && r.dataset.state === '{state}' \
           && r.querySelector('td.state').textContent === '{}';",
        state.to_uppercase()
    )
}

//------------ The tests -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_a_failure_and_its_drain_button_moves_the_answers() {
    let (mut east, _west, s) = start("").await;
    let admin = s.server.admin_addr().expect("admin API");

    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::start(profile.path()).await;
    browser.open(&format!("http://{admin}/")).await;
    browser.until("east up", &dc_shows("east", "up")).await;
    browser.until("west up", &dc_shows("west", "up")).await;
    answers_become(&s, "192.0.2.1").await;

    // East's backend stops: the probes fail, the page shows it down.
    east.stop().await;
    browser.until("east down", &dc_shows("east", "down")).await;
    answers_become(&s, "192.0.2.2").await;
    // The target row and the change log say so too.
    browser
        .until(
            "east's target down and the change logged",
            &format!(
                "const t = document.querySelector('tr.target[data-target=\"{}\"]'); \
                 const logged = Array.from(document.querySelectorAll('#events tr')) \
                   .some((r) => r.dataset.what === 'east' && r.dataset.to === 'DOWN'); \
                 return t !== null && t.dataset.state === 'down' && logged;",
                east.addr
            ),
        )
        .await;

    // Back on the same port: up again, answers return.
    let mut east = Backend::start(east.addr).await;
    browser
        .until("east up again", &dc_shows("east", "up"))
        .await;
    answers_become(&s, "192.0.2.1").await;

    // The operator drains east from the page.
    press_on_east(&browser, &s, "drain", "192.0.2.2", "east drained", "drain").await;
    browser
        .until(
            "the override column and the buttons",
            "const r = document.querySelector('tr.dc[data-dc=\"east\"]'); \
             const b = (a) => r.querySelector('button[data-action=\"' + a + '\"]').disabled; \
             return r.dataset.override === 'drain' && r.cells[3].textContent === 'drain' \
               && b('drain') && !b('undrain') && !b('force-up') \
               && document.getElementById('message').textContent.startsWith('drain east');",
        )
        .await;
    // The service table: east no longer usable for www.
    browser
        .until(
            "www cannot use east",
            "const r = document.querySelector('tr[data-service=\"www\"][data-dc=\"east\"]'); \
             return r !== null && r.dataset.usable === 'false';",
        )
        .await;
    let status = s.server.monitor().status();
    assert_eq!(status["zones"][0]["datacenters"][0]["override"], "drain");
    // The share of answers: a percentage for west (which got the answers
    // since the drain) where /status counts answers per datacenter, "—"
    // where it does not.
    let counted = status["zones"][0]["services"][0].get("answers").is_some();
    let share = "document.querySelector('tr[data-service=\"www\"][data-dc=\"west\"] td.share')";
    let check = if counted {
        format!("const c = {share}; return c !== null && /^[0-9.]+%$/.test(c.textContent);")
    } else {
        format!("const c = {share}; return c !== null && c.textContent === '—';")
    };
    browser.until("west's share of answers", &check).await;

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let shot = artifacts().join("status-page.png");
    std::fs::write(&shot, &png).expect("write the screenshot");
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // Undrain from the page: answers come back.
    press_on_east(
        &browser,
        &s,
        "undrain",
        "192.0.2.1",
        "east up, no override",
        "up",
    )
    .await;

    browser.quit().await;
    east.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_keeps_it_for_the_session() {
    let token = "status-page-test-token-42";
    let (east, west, s) = start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"
    ))
    .await;
    let admin = s.server.admin_addr().expect("admin API");

    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::start(profile.path()).await;
    browser.open(&format!("http://{admin}/")).await;
    browser
        .until(
            "the token form",
            "return !document.getElementById('token-form').hidden \
               && document.getElementById('conn').textContent === 'token needed' \
               && document.querySelector('tr.dc') === null;",
        )
        .await;
    // A wrong token is refused and the form comes back.
    browser.type_into("#token", "wrong-token").await;
    browser.click("#token-form button[type=\"submit\"]").await;
    browser
        .until(
            "the wrong token refused",
            "return !document.getElementById('token-form').hidden \
               && document.getElementById('conn').textContent === 'token refused';",
        )
        .await;
    browser.type_into("#token", token).await;
    browser.click("#token-form button[type=\"submit\"]").await;
    browser.until("east up", &dc_shows("east", "up")).await;
    // Kept for this tab only: sessionStorage, never localStorage or a
    // cookie.
    let stored = browser
        .eval(
            "return [sessionStorage.getItem('meridian-admin-token'), \
                     localStorage.length, document.cookie];",
        )
        .await;
    assert_eq!(stored, json!([token, 0, ""]));
    // The buttons send it.
    press_on_east(&browser, &s, "drain", "192.0.2.2", "east drained", "drain").await;
    browser.quit().await;
    drop((east, west));
}

#![allow(missing_docs)]

//! The README is tested: every command of every ```` ```console ```` block
//! runs, in order, against the real binary serving the shipped example
//! config (`meridian.toml`, `zones/`, `geoip/`, copied to a temporary
//! directory so the source tree is never written), and its output is
//! compared with what the README shows.
//!
//! The format is the usual console transcript:
//!
//! - `$ command` starts a command; `> more` lines continue it (a shell
//!   loop, say). Commands run with `bash -c` in the temporary directory,
//!   stdout and stderr together.
//! - The lines up to the next `$` are its expected output. A line `...`
//!   stands for any number of lines, and `[..]` for any text within a line
//!   (a DNS id, a cookie). Trailing blanks are ignored. A command shown
//!   with no output must print nothing.
//! - `cargo run --release -- ARGS` runs the binary under test with ARGS
//!   (a `cargo` on the test's PATH does that), so the README's commands
//!   run as written.
//!
//! The server listens where the README says (UDP/TCP 127.0.0.1:5300, the
//! admin API on 127.0.0.1:5380): those ports must be free. `dig`, `curl`
//! and `jq` must be installed; `scripts/test.sh` installs them when they
//! are missing, and this test fails, rather than passes, without them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command and the output the README shows for it.
#[derive(Debug)]
struct Step {
    /// README line of the `$`.
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The commands of every console block, in README order.
fn parse(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for (i, text) in readme.lines().enumerate() {
        if let Some(fence) = text.strip_prefix("```") {
            in_console = !in_console && fence.trim() == "console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = text.strip_prefix("$ ") {
            steps.push(Step {
                line: i + 1,
                command: cmd.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            match text.strip_prefix("> ") {
                Some(more) if step.expected.is_empty() => {
                    step.command.push('\n');
                    step.command.push_str(more);
                }
                _ => step.expected.push(text.trim_end().to_string()),
            }
        }
    }
    steps
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (k, part) in parts.iter().enumerate() {
        if k + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `actual` matches `expected`, where a line `...` stands for any
/// number of lines.
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(first, a) && output_matches(rest, more)),
    }
}

/// The server under test; killed (by its PID) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The example config in `dir`, and a PATH directory where `meridian` is
/// the binary under test and `cargo run --release -- ARGS` runs it.
fn prepare(dir: &Path) -> PathBuf {
    std::fs::copy(repo().join("meridian.toml"), dir.join("meridian.toml")).unwrap();
    copy_dir(&repo().join("zones"), &dir.join("zones"));
    copy_dir(&repo().join("geoip"), &dir.join("geoip"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_meridian"), bin.join("meridian")).unwrap();
    let shim = "#!/bin/sh\n\
        # The README's `cargo run --release -- ARGS`: the binary under test.\n\
        [ \"$1\" = run ] || { echo \"test cargo: only 'cargo run' is provided\" >&2; exit 2; }\n\
        while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done\n\
        [ \"$1\" = -- ] && shift\n\
        exec meridian \"$@\"\n";
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, shim).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Waits (bounded) until the server logs `ready`: its sockets and admin
/// API are open and its first probe round is done. Every line it logs to
/// stderr is kept, for the message if it exits instead.
fn wait_until_ready(server: &mut Server) {
    let stderr = server.0.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, past `ready`: the server keeps logging.
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.ends_with(" ready") => return,
            Ok(line) => log.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the server was not ready within 60 s:\n{}", log.join("\n"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.0.wait().unwrap();
                panic!(
                    "the server exited ({status}) before it was ready; are 127.0.0.1:5300 and \
                     :5380 free?\n{}",
                    log.join("\n")
                );
            }
        }
    }
}

#[test]
fn every_console_example_in_the_readme_runs_as_shown() {
    for tool in ["dig", "curl", "jq"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            found,
            "`{tool}` is missing: the README's examples use it (scripts/test.sh installs it)"
        );
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let steps = parse(&readme);
    assert!(
        steps.len() >= 10,
        "only {} console commands found",
        steps.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let bin = prepare(dir.path());
    let path = path_with(&bin);
    let mut server = Server(
        Command::new(bin.join("meridian"))
            .args(["run", "--config", "meridian.toml"])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meridian"),
    );
    wait_until_ready(&mut server);

    let mut failures = Vec::new();
    for step in &steps {
        let out = Command::new("timeout")
            .args([
                "60",
                "bash",
                "-c",
                &format!("{{\n{}\n}} 2>&1", step.command),
            ])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("TOKEN")
            .output()
            .expect("run bash");
        let text = String::from_utf8_lossy(&out.stdout);
        let actual: Vec<&str> = text.lines().map(str::trim_end).collect();
        if !output_matches(&step.expected, &actual) {
            failures.push(format!(
                "README.md:{}: $ {}\n--- expected\n{}\n--- got\n{}",
                step.line,
                step.command,
                step.expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} README commands differ from what the README shows:\n\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_transcript_matcher_understands_its_wildcards() {
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(line_matches("id: [..], flags", "id: 4242, flags"));
    assert!(line_matches("[..]", "anything"));
    assert!(line_matches("a[..]b[..]c", "a-b-c"));
    assert!(!line_matches("a[..]c", "a-b"));
    assert!(!line_matches("exact", "exact and more"));
    assert!(output_matches(
        &lines("one\n...\nfour"),
        &["one", "two", "three", "four"]
    ));
    assert!(output_matches(&lines("one\n..."), &["one"]));
    assert!(!output_matches(&lines("one"), &["one", "two"]));
    assert!(!output_matches(&[], &["unexpected"]));
    let steps = parse(
        "text\n```console\n$ for x in a b; do\n>   echo $x\n> done\na\nb\n$ true\n```\n```sh\n$ not a console block\n```\n",
    );
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "for x in a b; do\n  echo $x\ndone");
    assert_eq!(steps[0].expected, ["a", "b"]);
    assert_eq!(steps[0].line, 3);
    assert!(steps[1].expected.is_empty());
}

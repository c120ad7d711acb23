//! `type = "exec"`: an operator's command. Exit status 0 passes; otherwise
//! the first line of its output is the error.
//!
//! The command runs without a shell, in a process group of its own, with
//! stdin closed and stdout and stderr on one pipe. The whole group is
//! killed (`SIGKILL`) when the probe ends: at the timeout (the probe's
//! future is dropped, and `Group`'s `Drop` kills), and after the command
//! exits too, so nothing it started in the background outlives it. Only
//! the first [`OUTPUT_LIMIT`] bytes of output are kept; the rest is read
//! and discarded, so a chatty command never blocks on a full pipe.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Context, Failure};
use crate::model::ExecProbe;

/// Output bytes kept for the error text.
pub const OUTPUT_LIMIT: usize = 4096;

/// How long output is still read after the command exits: what it wrote
/// is already in the pipe, but a process that left the group may hold
/// the pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// The environment variables a command gets (besides this process's).
pub const ENV_ADDRESS: &str = "MERIDIAN_TARGET_ADDRESS";
/// The target's port (0 when the probe has none).
pub const ENV_PORT: &str = "MERIDIAN_TARGET_PORT";
/// The zone's origin, e.g. `example.com.`.
pub const ENV_ZONE: &str = "MERIDIAN_ZONE";
/// The datacenter's name.
pub const ENV_DATACENTER: &str = "MERIDIAN_DATACENTER";
/// The probe timeout in milliseconds, after which the group is killed.
pub const ENV_TIMEOUT_MS: &str = "MERIDIAN_TIMEOUT_MS";

/// A prepared command probe for one target.
#[derive(Debug)]
pub struct Exec {
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Exec {
    /// Prepares the command and its environment.
    pub(super) fn new(
        spec: &ExecProbe,
        target: SocketAddr,
        timeout: Duration,
        ctx: Context<'_>,
    ) -> Self {
        Self {
            argv: spec.command.clone(),
            env: vec![
                (ENV_ADDRESS, target.ip().to_string()),
                (ENV_PORT, target.port().to_string()),
                (ENV_ZONE, ctx.zone.to_string()),
                (ENV_DATACENTER, ctx.datacenter.to_string()),
                (ENV_TIMEOUT_MS, timeout.as_millis().to_string()),
            ],
        }
    }

    /// Runs the command to its end. The caller's timeout bounds it;
    /// dropping the future kills the process group.
    pub(super) async fn run(&self) -> Result<(), Failure> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(Failure::local("empty command"));
        };
        let (reader, writer) = io::pipe().map_err(|e| Failure::local(format!("pipe: {e}")))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| Failure::local(format!("pipe: {e}")))?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            // A group of its own (pgid = its pid), so that one killpg
            // reaches everything it starts.
            .process_group(0);
        let spawned = command.spawn();
        // The write ends now live in the child only: the pipe reads EOF
        // once every process holding them is gone.
        drop(command);
        // Failing to start is this host's problem (a missing program, no
        // processes or descriptors left), not the target's.
        let mut child =
            spawned.map_err(|e| Failure::local(format!("cannot run {program:?}: {e}")))?;
        let mut group = child.id().map(Group);
        let mut output = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(|e| Failure::local(format!("pipe: {e}")))?;

        let mut kept = Vec::with_capacity(OUTPUT_LIMIT);
        let mut buf = [0u8; 4096];
        let mut status: Option<io::Result<ExitStatus>> = None;
        let mut eof = false;
        let drain_until = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_until);
        while !(eof && status.is_some()) {
            tokio::select! {
                r = child.wait(), if status.is_none() => {
                    // Whatever it left running dies with it, now and
                    // only now: the group ID is free for reuse once its
                    // last member is gone.
                    drop(group.take());
                    status = Some(r);
                    drain_until
                        .as_mut()
                        .reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                r = output.read(&mut buf), if !eof => match r {
                    Ok(0) | Err(_) => eof = true,
                    Ok(n) => {
                        let room = OUTPUT_LIMIT - kept.len();
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                },
                () = &mut drain_until, if status.is_some() => break,
            }
        }
        let status = match status {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(Failure::local(format!("waiting for the command: {e}"))),
            None => return Err(Failure::local("the command's status is unknown")),
        };
        if status.success() {
            return Ok(());
        }
        Err(Failure::target(
            first_line(&kept).unwrap_or_else(|| describe_status(status)),
        ))
    }
}

/// The first non-blank line of `output`, trimmed; lossy UTF-8.
pub fn first_line(output: &[u8]) -> Option<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// "exit status 3" or "killed by signal 9".
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code} (no output)"),
        (None, Some(sig)) => format!("killed by signal {sig} (no output)"),
        (None, None) => format!("{status} (no output)"),
    }
}

/// A command's process group; dropping it kills the whole group.
///
/// Killing by group ID is safe while the group's leader (our child) is
/// not yet reaped: until then its PID, and so the group ID, cannot be
/// reused. Our child is reaped only inside `child.wait()`, after which
/// [`Exec::run`] kills at once.
#[derive(Debug)]
struct Group(u32);

impl Group {
    #[allow(unsafe_code)]
    fn kill(&self) {
        let Ok(pgid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: killpg takes plain integers and touches no memory. ESRCH
        // (the group is already gone) is expected and ignored.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_non_blank_line_is_the_error() {
        assert_eq!(
            first_line(b"\n  \nbad thing\nmore\n"),
            Some("bad thing".into())
        );
        assert_eq!(first_line(b"  only  "), Some("only".into()));
        assert_eq!(first_line(b"\n\n"), None);
        assert_eq!(first_line(b"caf\xff\n"), Some("caf\u{fffd}".into()));
    }

    #[test]
    fn a_status_without_output_is_described() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3 (no output)"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9 (no output)"
        );
    }
}

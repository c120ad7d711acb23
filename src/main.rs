//! The `meridian` command: parse arguments, set up logging, hand over to
//! the library. Owns no logic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nShipped GeoIP data: IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
);

/// Meridian: an authoritative DNS global load balancer. Answers each client
/// with the records of its nearest datacenter (GeoIP + EDNS Client Subnet).
#[derive(Parser, Debug)]
#[command(name = "meridian", version, long_version = LONG_VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve DNS on the configured addresses until SIGINT/SIGTERM.
    /// SIGHUP reloads the config, zones and GeoIP database; a bad config
    /// is logged and the running one kept.
    Run {
        /// Server config file; zones and geoip paths in it are relative to it.
        #[arg(long, short, default_value = "meridian.toml")]
        config: PathBuf,
        /// Listen on ADDR:PORT (UDP and TCP) instead of the configured
        /// addresses; repeat for several. IPv6 as [::1]:5300.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Vec<SocketAddr>,
    },
    /// Load and validate everything (config, zones, GeoIP database, policy
    /// tables), print a summary and exit 0, or print the first error and
    /// exit 1.
    Check {
        /// Server config file.
        #[arg(long, short, default_value = "meridian.toml")]
        config: PathBuf,
    },
    /// Show how a client is answered: its GeoIP location, the ranked
    /// datacenters with distances (or, for latency steps, the RTT
    /// estimates, their level and samples, from the latency state file the
    /// server saved), the answer and the ECS scope, computed by the same
    /// handler as a real query. Health is not probed: use the admin API's
    /// GET /explain for live decisions.
    Explain {
        /// Server config file.
        #[arg(long, short, default_value = "meridian.toml")]
        config: PathBuf,
        /// Name to ask for, e.g. www.gslb.example.com
        name: String,
        /// Record type.
        #[arg(default_value = "A")]
        qtype: String,
        /// Client address, as IP or IP/PREFIX (bare IPv4 means /24, bare
        /// IPv6 /56), sent as EDNS Client Subnet.
        #[arg(long, value_name = "IP[/PREFIX]")]
        client: String,
    },
}

/// Logging to standard error, as text or (`log_format = "json"`) one
/// JSON object per line.
fn init_tracing(format: meridian::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    // hickory-proto logs some malformed packets at WARN: on the query
    // path that is one line per packet a remote client chooses to send.
    // The envelope answers those with FORMERR before hickory reads them;
    // this keeps any it still sees out of the log unless asked for.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_proto=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        meridian::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        meridian::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, listen } => {
            // The log format comes from the config; if it cannot be read,
            // text, and starting reports why.
            let format = meridian::config::load_server(&config)
                .map(|c| c.log_format)
                .unwrap_or_default();
            init_tracing(format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(config, listen))
        }
        Command::Check { config } => {
            let started = std::time::Instant::now();
            match meridian::load(&config) {
                Ok((cfg, snap)) => {
                    eprintln!(
                        "{}: OK: {} zone(s), {} service(s), {} datacenter(s); GeoIP {}; loaded in {} ms",
                        config.display(),
                        cfg.zones.len(),
                        cfg.zones.iter().map(|z| z.services.len()).sum::<usize>(),
                        cfg.zones.iter().map(|z| z.datacenters.len()).sum::<usize>(),
                        snap.geo.describe(),
                        started.elapsed().as_millis()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            config,
            name,
            qtype,
            client,
        } => {
            let client = match meridian::explain::parse_client(&client) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: --client: {e}");
                    return ExitCode::from(2);
                }
            };
            let (cfg, snap) = match meridian::load(&config) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // The latency aggregates the server saved last (`[latency]
            // state_file`), so latency steps explain with what it learned.
            let hub = meridian::latency::hub::Hub::new(&cfg, snap.latency.sources().asn);
            let sources = meridian::latency::Sources {
                rum: hub.publish_rum(meridian::latency::unix_now()),
                ..snap.latency.sources()
            };
            let snap = snap.with_latency(sources, Box::default());
            match meridian::explain::explain(&snap, &name, &qtype, client) {
                Ok(report) => {
                    #[allow(clippy::print_stdout)]
                    {
                        print!("{report}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(config: PathBuf, listen: Vec<SocketAddr>) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: until they are installed a SIGHUP kills the process
    // (its default action), and start-up can take seconds while the first
    // round of probes runs.
    let (Ok(mut hup), Ok(mut term)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    tracing::info!(config = %config.display(), "starting");
    let listen = (!listen.is_empty()).then_some(listen);
    let start = meridian::Server::start(&config, listen);
    tokio::pin!(start);
    // A reload asked for during start-up is done once the server is up:
    // the config may have changed after start-up read it.
    let mut reload_queued = false;
    let started = loop {
        tokio::select! {
            r = &mut start => break r,
            _ = hup.recv() => {
                if !reload_queued {
                    tracing::info!("SIGHUP during start-up: reload queued until the server is ready");
                }
                reload_queued = true;
            }
            _ = term.recv() => {
                tracing::info!("shutting down during start-up");
                return ExitCode::SUCCESS;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down during start-up");
                return ExitCode::SUCCESS;
            }
        }
    };
    let server = match started {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("ready");
    if reload_queued {
        tracing::info!("performing the reload queued during start-up");
        reload(&server).await;
    }
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&server).await,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("shutting down");
    if let Ok(server) = std::sync::Arc::try_unwrap(server) {
        server.shutdown().await;
    }
    ExitCode::SUCCESS
}

/// Reloads off the runtime threads (it walks the GeoIP database); failures
/// are logged and the running configuration kept.
/// SIGHUP: the same reload as `POST /reload`, which logs its result.
async fn reload(server: &std::sync::Arc<meridian::Server>) {
    let s = std::sync::Arc::clone(server);
    if let Err(e) = tokio::task::spawn_blocking(move || s.reload()).await {
        tracing::error!("reload failed: {e}");
    }
}

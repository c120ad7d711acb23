//! The `meridian` command: parse arguments, set up logging, hand over to
//! the library. Owns no logic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// What-if: which client networks a new config would move to another
    /// datacenter. Loads both configs as `check` does, answers every
    /// network of the GeoIP database under each (every datacenter up,
    /// drain/force-up ignored) and prints the moves per service, per
    /// datacenter pair, per country and per continent, in IPv4 /24 and
    /// IPv6 /48 equivalents. Exit 0, 1 when a config does not load, 3 when
    /// --fail-above is exceeded.
    Diff {
        /// The new config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The config in service now.
        #[arg(long, default_value = "meridian.toml", value_name = "CURRENT")]
        old: PathBuf,
        /// Print the report as JSON (schema: README, "What-if diff").
        #[arg(long)]
        json: bool,
        /// Exit 3 when any compared service moves more than PERCENT of the
        /// database's IPv4 or IPv6 space, overall or in any continent.
        #[arg(long, value_name = "PERCENT")]
        fail_above: Option<f64>,
    },
    /// GeoIP database maintenance.
    Geoip {
        #[command(subcommand)]
        command: GeoipCommand,
    },
    /// Write a starter configuration into DIR (created if missing):
    /// meridian.toml and zones/gslb.example.com.toml, which `check`
    /// accepts and `run` serves with the built-in GeoIP database. Never
    /// overwrites a file: if one exists, nothing is written.
    Init {
        /// Directory for the configuration.
        dir: PathBuf,
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
    /// DNSSEC keys: make them, and print the DS records for the parent.
    Dnssec {
        #[command(subcommand)]
        command: DnssecCommand,
    },
}

#[derive(Subcommand, Debug)]
enum DnssecCommand {
    /// Make a key pair in BIND's format: DIR/K<zone>.+<alg>+<tag>.key (the
    /// DNSKEY record) and .private (mode 0600, never overwritten). Prints
    /// the key tag and the `[dnssec]` lines to paste into the zone file.
    ///
    /// Example: meridian dnssec keygen gslb.example.com --dir zones/keys
    #[command(verbatim_doc_comment)]
    Keygen {
        /// The zone, e.g. gslb.example.com
        zone: String,
        /// ecdsap256sha256 (13) or ed25519 (15).
        #[arg(long, default_value = "ecdsap256sha256")]
        algorithm: String,
        /// csk (one key, flags 257), ksk (flags 257) or zsk (flags 256).
        #[arg(long, default_value = "csk")]
        role: String,
        /// Directory for the two files (created if missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print the DS records of the zone's published KSKs/CSKs, from the
    /// keys its zone file lists: what to give the parent zone.
    ///
    /// Example: meridian dnssec ds gslb.example.com --config meridian.toml
    #[command(verbatim_doc_comment)]
    Ds {
        /// The zone, e.g. gslb.example.com
        zone: String,
        /// Server config file.
        #[arg(long, short, default_value = "meridian.toml")]
        config: PathBuf,
        /// Digest types: 2 (SHA-256), 4 (SHA-384); repeat for both.
        #[arg(long, default_values_t = [2u8], value_parser = clap::value_parser!(u8).range(2..=4))]
        digest: Vec<u8>,
    },
}

#[derive(Subcommand, Debug)]
enum GeoipCommand {
    /// Install a newer GeoIP database beside the config and reload: the
    /// operator's file (--file) or DB-IP's monthly lite database. The file
    /// is verified (opens, >= 10,000 networks, >= 90 % with a country,
    /// plausible build date not older than the installed one), written
    /// atomically over the config's `geoip` path (or geoip.mmdb beside the
    /// config when `geoip` is not set), then the running server is told
    /// to reload through POST /reload on its admin API. Exit 0 when
    /// installed (and reloaded), 1 when refused (nothing changed), 4 when
    /// installed but the reload failed.
    Update {
        /// Server config file.
        #[arg(long, short, default_value = "meridian.toml")]
        config: PathBuf,
        /// A database you downloaded: .mmdb or .mmdb.gz. Without it,
        /// DB-IP's lite database is downloaded.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// DB-IP edition to download: country (about 8 MB, what ships) or
        /// city (about 130 MB, city coordinates).
        #[arg(long, default_value = "country", value_parser = ["country", "city"])]
        edition: String,
        /// Month to download, YYYY-MM (default: this month, else the
        /// previous one when this month's is not out yet).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        /// Install even when the new database is older than the installed
        /// one.
        #[arg(long)]
        force: bool,
        /// Install only; do not ask the server to reload.
        #[arg(long)]
        no_reload: bool,
    },
}

/// `meridian dnssec ...`: the result on stdout, errors on stderr.
fn dnssec(command: DnssecCommand) -> ExitCode {
    use meridian::dnssec::{cli, keys::KeyAlgorithm};
    let result = match command {
        DnssecCommand::Keygen {
            zone,
            algorithm,
            role,
            dir,
        } => match (KeyAlgorithm::parse(&algorithm), cli::Role::parse(&role)) {
            (Some(alg), Some(role)) => cli::keygen(&zone, alg, role, &dir),
            (None, _) => Err(format!(
                "--algorithm {algorithm:?}: ecdsap256sha256 or ed25519"
            )),
            (_, None) => Err(format!("--role {role:?}: csk, ksk or zsk")),
        },
        DnssecCommand::Ds {
            zone,
            config,
            digest,
        } => cli::ds(&zone, &config, &digest),
    };
    match result {
        Ok(text) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
    // A log line that cannot be written (stderr closed) is lost, not
    // reported: the report would go to the same stderr, and Rust's
    // `eprintln!` panics there, taking down whatever task was logging.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
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
        Command::Diff {
            config,
            old,
            json,
            fail_above,
        } => diff(&old, &config, json, fail_above),
        Command::Geoip {
            command:
                GeoipCommand::Update {
                    config,
                    file,
                    edition,
                    month,
                    force,
                    no_reload,
                },
        } => geoip_update(&config, file.as_deref(), &edition, month, force, no_reload),
        Command::Dnssec { command } => dnssec(command),
        Command::Init { dir } => match meridian::init::init(&dir) {
            Ok(paths) => {
                for p in &paths {
                    eprintln!("wrote {}", p.display());
                }
                let config = dir.join("meridian.toml");
                eprintln!(
                    "next: edit the zone, then `meridian check --config {0}` and \
                     `meridian run --config {0}`",
                    config.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
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

/// `meridian diff`: see [`meridian::diff`].
fn diff(old: &Path, new: &Path, json: bool, fail_above: Option<f64>) -> ExitCode {
    if fail_above.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
        eprintln!("error: --fail-above: a percentage from 0 to 100");
        return ExitCode::from(2);
    }
    if let (Ok(a), Ok(b)) = (old.canonicalize(), new.canonicalize())
        && a == b
    {
        eprintln!(
            "error: --config and --old are the same file ({}): nothing to compare; \
             give the config in service with --old",
            a.display()
        );
        return ExitCode::from(2);
    }
    let load = |path: &Path, which: &str| {
        meridian::load(path).map_err(|e| eprintln!("error: {which} config: {e}"))
    };
    let (Ok((old_cfg, old_snap)), Ok((new_cfg, new_snap))) = (load(old, "old"), load(new, "new"))
    else {
        return ExitCode::FAILURE;
    };
    let report = meridian::diff::diff(
        (&old_cfg, &old_snap),
        (&new_cfg, &new_snap),
        [old.display().to_string(), new.display().to_string()],
    );
    #[allow(clippy::print_stdout)]
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{report}");
    }
    match fail_above {
        Some(limit) if report.max_percent() > limit => {
            eprintln!(
                "diff: {:.2} % moves somewhere, above --fail-above {limit}",
                report.max_percent()
            );
            ExitCode::from(3)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// `meridian geoip update`: see [`meridian::geo::update`].
fn geoip_update(
    config: &Path,
    file: Option<&Path>,
    edition: &str,
    month: Option<String>,
    force: bool,
    no_reload: bool,
) -> ExitCode {
    use meridian::geo::update;
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    let server = match meridian::config::load_server(config) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let (target, configured) = update::target(&server);
    if let Err(e) = update::check_not_source_tree(&target) {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (name, bytes) = match file {
        Some(path) => match std::fs::read(path) {
            Ok(b) => (path.to_path_buf(), b),
            Err(e) => return fail(&format!("{}: {e}", path.display())),
        },
        None => {
            let months = match month {
                Some(m) => vec![m],
                None => vec![
                    update::month_of(now),
                    update::month_of(now.saturating_sub(28 * 86_400)),
                ],
            };
            eprintln!(
                "downloading DB-IP {edition} lite for {} from download.db-ip.com",
                months.join(" (else ") + &")".repeat(months.len().saturating_sub(1))
            );
            match runtime.block_on(update::download(edition, &months)) {
                Ok((url, b)) => (PathBuf::from(url), b),
                Err(e) => return fail(&e),
            }
        }
    };
    let bytes = match update::decompress(bytes) {
        Ok(b) => b,
        Err(e) => return fail(&format!("{}: {e}", name.display())),
    };
    let installed = if force {
        None
    } else {
        update::installed_build(&target)
    };
    let summary = match update::verify(&name, bytes.clone(), now, installed) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{e}; nothing installed")),
    };
    eprintln!("verified {}: {summary}", name.display());
    if let Err(e) = update::install(&target, &bytes) {
        return fail(&e);
    }
    eprintln!("installed {}", target.display());
    if !configured {
        eprintln!(
            "next: set geoip = \"{}\" in {} (it uses the built-in database now), then reload: \
             systemctl reload meridian, or kill -HUP the server",
            update::DEFAULT_FILE_NAME,
            config.display()
        );
        return ExitCode::SUCCESS;
    }
    if no_reload {
        eprintln!("next: reload: systemctl reload meridian, or kill -HUP the server");
        return ExitCode::SUCCESS;
    }
    let Some(admin) = &server.admin else {
        eprintln!(
            "the admin API is disabled in {}: reload with systemctl reload meridian, or kill -HUP the server",
            config.display()
        );
        return ExitCode::SUCCESS;
    };
    match runtime.block_on(update::post_reload(admin)) {
        Ok(body) => {
            eprintln!("reloaded: {body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: installed, but the reload failed: {e}; reload with systemctl reload \
                 meridian, or kill -HUP the server"
            );
            ExitCode::from(4)
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

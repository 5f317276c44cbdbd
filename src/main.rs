//! The `herald` command line: `serve`, `check-config`, `backup`. Everything
//! else lives in the library (`src/lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::{backup_client, config, daemon, logging};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Event log, signed webhooks and transactional email in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon. Without --config it uses the embedded defaults:
    /// 127.0.0.1:8425, data in ./herald-data.
    Serve {
        /// TOML configuration file (see config.example.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address of the private API, overriding server.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overriding storage.data_dir.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Parse and validate a configuration file; exit non-zero on any error.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Download a consistent, compacted copy of the running daemon's database.
    Backup {
        /// Where to write the copy; must not exist yet.
        #[arg(long)]
        out: PathBuf,
        /// Read the daemon's address and API key from this configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The daemon's URL, overriding the configured listen address.
        #[arg(long)]
        url: Option<String>,
        /// API key; defaults to HERALD_API_KEY, then the first configured key.
        #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env_keys = std::env::var(config::API_KEYS_ENV).ok();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data,
        } => {
            let overrides = config::Overrides {
                listen,
                data_dir: data,
            };
            let cfg = match config::load(config.as_deref(), &overrides, env_keys.as_deref()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("herald: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            logging::init(cfg.log_format, &cfg.log_level);
            match daemon::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("herald: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => {
            match config::load(
                Some(&file),
                &config::Overrides::default(),
                env_keys.as_deref(),
            ) {
                Ok(cfg) => {
                    println!(
                        "{}: ok (listen {}, data {})",
                        file.display(),
                        cfg.listen,
                        cfg.data_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("herald: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Backup {
            out,
            config,
            url,
            api_key,
        } => {
            let cfg = match config::load(
                config.as_deref(),
                &config::Overrides::default(),
                env_keys.as_deref(),
            ) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("herald: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            let url = url.unwrap_or_else(|| {
                let mut addr = cfg.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            });
            let key = api_key.or_else(|| cfg.admin_key().map(str::to_owned));
            match backup_client::run(&url, key.as_deref(), &out) {
                Ok(done) => {
                    println!(
                        "{}: {} bytes, {} events, schema version {}",
                        out.display(),
                        done.bytes,
                        done.events,
                        done.schema_version
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("herald: backup failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

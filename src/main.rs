//! The `herald` command line: `serve`, `check-config` and `migrate` here;
//! `backup` and the admin commands, which talk to a running daemon, in
//! `herald::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::{cli, config, daemon, logging, pg};

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
        #[command(flatten)]
        target: cli::Target,
    },
    /// Copy a redb database's event log into PostgreSQL.
    Migrate {
        /// The PostgreSQL database: postgres://user:password@host:5432/database.
        #[arg(long, env = config::store::POSTGRES_URL_ENV, hide_env_values = true)]
        to: String,
        /// A PEM file of CA certificates trusted besides Mozilla's roots,
        /// for a --to URL with ?sslmode=require (as store.postgres_ca_file).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// The redb file: a stopped daemon's, or a copy from `herald backup`.
        #[arg(long, default_value = "./herald-data/herald.redb")]
        from: PathBuf,
    },
    #[command(flatten)]
    Admin(cli::AdminCommand),
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
                Ok(cfg) => match daemon::check_backend(&cfg) {
                    Ok(store) => {
                        println!(
                            "{}: ok (listen {}, data {}, {store})",
                            file.display(),
                            cfg.listen,
                            cfg.data_dir.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("herald: {}: {e}", file.display());
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    eprintln!("herald: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Backup { out, target } => cli::backup(&out, &target),
        Command::Migrate { to, ca_file, from } => migrate(&to, ca_file.as_deref(), &from),
        Command::Admin(command) => cli::run(command),
    }
}

fn migrate(to: &str, ca_file: Option<&std::path::Path>, from: &std::path::Path) -> ExitCode {
    let settings = match config::store::one_connection(
        ("--to", to),
        ("--ca-file", ca_file),
        pg::migrate::STATEMENT_TIMEOUT,
        pg::migrate::CONNECT_TIMEOUT,
    ) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("herald migrate: {e}");
            return ExitCode::from(2);
        }
    };
    match pg::migrate::run(from, &settings) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

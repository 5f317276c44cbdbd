//! The commands that talk to a running daemon (`herald backup`,
//! `herald endpoints …`, `herald stats` …): each is a few calls to its API,
//! printed as a table or, with `--json`, as the API answered.

mod deliveries;
mod endpoints;
mod keys;
mod mail;
mod stats;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::api_client::{Answer, ApiClient, ClientError};
use crate::backup_client;
use crate::config;

/// Where the daemon is and which key to show it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Read the daemon's address and API key from this configuration file.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's URL (http://HOST:PORT), overriding the configured listen address.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API key; defaults to HERALD_API_KEY, then the first configured admin key.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

/// What every admin command takes.
#[derive(Args, Debug, Clone)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    /// Print the API's JSON answer unchanged instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Webhook endpoints: list, show one with its health, disable, enable, send a test.
    Endpoints {
        #[command(flatten)]
        options: Options,
        #[command(subcommand)]
        action: endpoints::Action,
    },
    /// One delivery with every attempt; retry it now.
    Deliveries {
        #[command(flatten)]
        options: Options,
        #[command(subcommand)]
        action: deliveries::DeliveryAction,
    },
    /// Dead letters (deliveries whose retries ran out): list, recover an endpoint's.
    Dlq {
        #[command(flatten)]
        options: Options,
        #[command(subcommand)]
        action: deliveries::DeadLetterAction,
    },
    /// One message with its timeline: queued, relay replies, ESP events.
    Emails {
        #[command(flatten)]
        options: Options,
        #[command(subcommand)]
        action: mail::EmailAction,
    },
    /// Addresses mail must not go to: list, add, remove.
    Suppressions {
        #[command(flatten)]
        options: Options,
        #[command(subcommand)]
        action: mail::SuppressionAction,
    },
    /// API keys made through the API: create (the key is shown once), list, revoke.
    Keys {
        #[command(flatten)]
        options: Options,
        #[command(subcommand)]
        action: keys::Action,
    },
    /// The first look: events, endpoints and their health, dead letters,
    /// queue, mail per stream, storage.
    Stats {
        #[command(flatten)]
        options: Options,
    },
}

/// Why a command failed, which decides its exit status.
#[derive(Debug)]
pub enum CliError {
    /// A bad argument or configuration: exit 2.
    Usage(String),
    /// The daemon refused or could not be reached: exit 1.
    Api(ClientError),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Api(e)
    }
}

impl CliError {
    fn report(&self) -> ExitCode {
        match self {
            CliError::Usage(message) => {
                eprintln!("herald: {message}");
                ExitCode::from(2)
            }
            CliError::Api(e) => {
                eprintln!("herald: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// A connection to the daemon and how to print its answers.
pub(crate) struct Session {
    client: ApiClient,
    json: bool,
}

impl Session {
    pub(crate) fn get(&mut self, path: &str) -> Result<Value, CliError> {
        Ok(self.client.get(path)?)
    }

    pub(crate) fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        Ok(self.client.send(method, path, body)?)
    }
}

/// The API's answer as it came, for `--json`.
pub(crate) fn raw(answer: &Answer) -> String {
    let text = answer.text();
    if text.is_empty() {
        text
    } else {
        format!("{}\n", text.trim_end())
    }
}

/// Output as it may reach a terminal: lines of text with no control
/// characters, whatever a receiver or relay said. JSON escapes them itself.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => c,
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// The daemon's URL and API key: `--url`, else the configured listen
/// address (loopback for an unspecified one); `--api-key` or
/// `HERALD_API_KEY`, else the first admin key of the configuration.
fn connect(target: &Target) -> Result<ApiClient, CliError> {
    let env_keys = std::env::var(config::API_KEYS_ENV).ok();
    let cfg = config::load(
        target.config.as_deref(),
        &config::Overrides::default(),
        env_keys.as_deref(),
    )
    .map_err(|e| CliError::Usage(format!("configuration error: {e}")))?;
    let url = target.url.clone().unwrap_or_else(|| {
        let mut addr = cfg.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    let key = target
        .api_key
        .clone()
        .or_else(|| cfg.admin_key().map(str::to_owned));
    ApiClient::new(&url, key.as_deref()).map_err(|e| CliError::Usage(e.to_string()))
}

/// Runs an admin command and prints what it answered.
pub fn run(command: AdminCommand) -> ExitCode {
    let options = match &command {
        AdminCommand::Endpoints { options, .. }
        | AdminCommand::Deliveries { options, .. }
        | AdminCommand::Dlq { options, .. }
        | AdminCommand::Emails { options, .. }
        | AdminCommand::Suppressions { options, .. }
        | AdminCommand::Keys { options, .. }
        | AdminCommand::Stats { options } => options.clone(),
    };
    let client = match connect(&options.target) {
        Ok(client) => client,
        Err(e) => return e.report(),
    };
    let mut session = Session {
        client,
        json: options.json,
    };
    let s = &mut session;
    let printed = match command {
        AdminCommand::Endpoints { action, .. } => endpoints::run(s, action),
        AdminCommand::Deliveries { action, .. } => deliveries::run_delivery(s, action),
        AdminCommand::Dlq { action, .. } => deliveries::run_dead_letters(s, action),
        AdminCommand::Emails { action, .. } => mail::run_email(s, action),
        AdminCommand::Suppressions { action, .. } => mail::run_suppression(s, action),
        AdminCommand::Keys { action, .. } => keys::run(s, action),
        AdminCommand::Stats { .. } => stats::run(s),
    };
    match printed {
        Ok(text) => {
            print!("{}", printable(&text));
            ExitCode::SUCCESS
        }
        Err(e) => e.report(),
    }
}

/// `herald backup --out FILE`: the download, its check, and one line
/// saying what was written.
pub fn backup(out: &Path, target: &Target) -> ExitCode {
    let mut client = match connect(target) {
        Ok(client) => client,
        Err(e) => return e.report(),
    };
    match backup_client::run(&mut client, out) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_its_lines_and_loses_control_characters() {
        assert_eq!(printable("a\x1b[1mb\r\nc\n"), "a\u{FFFD}[1mb\u{FFFD}\nc\n");
    }
}

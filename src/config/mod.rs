//! Configuration: the TOML file's shape, its embedded defaults, and the checks
//! that turn a parsed file into settings the daemon can trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod feedback;
pub mod mail;
mod retention;
pub mod store;
pub mod tracking;
mod values;
pub mod webhooks;

pub use values::ConfigError;
use values::{duration, in_range, invalid};

use crate::mail::settings::{MailSettings, PublicSettings};
use crate::retention::RetentionSettings;
use crate::roles::Role;
use crate::tracking::settings::TrackingSettings;
use crate::webhooks::settings::WebhookSettings;
use mail::{check_unsubscribe_links, validate_mail, validate_public, MailSection, PublicSection};
use tracking::{validate_tracking, TrackingSection};
use webhooks::{check_owner_alerts, validate_webhooks, WebhooksSection};

/// Port of the private API when nothing else is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8425";
/// Environment variable holding extra API keys, comma-separated.
pub const API_KEYS_ENV: &str = "HERALD_API_KEYS";

/// The file as written. Every table rejects unknown keys so a typo is an error
/// at start-up instead of a silently ignored setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// `[server]`: the private API's address, keys and connection limits.
    pub server: ServerSection,
    /// `[storage]`: where the database lives and how writes are batched.
    pub storage: StorageSection,
    /// `[store]`: the backend (`redb` or `postgres`) and how to reach PostgreSQL.
    pub store: store::StoreSection,
    /// `[events]`: size limits of posted events.
    pub events: EventsSection,
    /// `[log]`: output format and level.
    pub log: LogSection,
    /// `[webhooks]`: reachable networks, retries and per-endpoint limits.
    pub webhooks: WebhooksSection,
    /// `[mail]`: workers, retries, limits and the `[mail.streams.*]` tables.
    pub mail: MailSection,
    /// `[public]`: the internet-facing listener and the base URL of links in mail.
    pub public: PublicSection,
    /// `[tracking]`: Segment sources, limits, deduplication and retention.
    pub tracking: TrackingSection,
    /// `[feedback.*]`: the ESPs whose bounce and complaint webhooks are accepted.
    pub feedback: feedback::FeedbackSection,
    /// `[admin]`: the dashboard at `/admin`.
    pub admin: AdminSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// How long a dashboard sign-in lasts, as a duration. On redb sessions
    /// live in memory, so a restart ends them all sooner; on PostgreSQL
    /// they live in the database every node shares.
    pub session_ttl: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            session_ttl: "12h".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address of the private API; one off loopback is refused without API keys.
    pub listen: String,
    /// Bearer keys of the private API, each at least 16 printable ASCII characters
    /// without spaces; `HERALD_API_KEYS` adds more. With none the API is open to
    /// local callers.
    pub api_keys: Vec<String>,
    /// `[[server.keys]]`: keys with a role and, optionally, a tenant they are
    /// confined to. Keys created through `POST /v1/keys` live in the database.
    pub keys: Vec<KeySection>,
    /// Requests served at once; further ones wait for a slot. A connection
    /// holds a slot only while a request of its own is being served.
    pub max_connections: usize,
    /// Connections waiting for a request head (new, or kept alive between
    /// requests); when full, the oldest of them is closed for a new one.
    pub max_idle_connections: usize,
    /// Connections of one IP address; at the cap its oldest idle one is
    /// closed for a new one, or the new one is refused if none is idle.
    pub max_connections_per_peer: usize,
    /// Time a client has to send its request headers, as a duration, from
    /// accept or from the end of the previous answer; trickling bytes does
    /// not extend it.
    pub header_timeout: String,
    /// Time a client has to send the body, as a duration; then it gets 408.
    pub body_timeout: String,
    /// How long in-flight requests may finish after SIGTERM/SIGINT; keep it
    /// below systemd's `TimeoutStopSec`.
    pub shutdown_grace: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            api_keys: Vec::new(),
            keys: Vec::new(),
            max_connections: 1024,
            max_idle_connections: 1024,
            max_connections_per_peer: 256,
            header_timeout: "10s".to_owned(),
            body_timeout: "30s".to_owned(),
            shutdown_grace: "20s".to_owned(),
        }
    }
}

/// One `[[server.keys]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// The bearer key itself, at least 24 printable ASCII characters without spaces.
    pub key: Option<String>,
    /// Or the name of an environment variable holding it, so the file can be shared.
    pub key_env: Option<String>,
    /// `admin`, `write` or `read`.
    pub role: String,
    /// Confines the key to this tenant's objects.
    pub tenant: Option<String>,
}

/// Shortest key accepted in `[[server.keys]]`.
pub const MIN_SCOPED_KEY_LEN: usize = 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Directory of `herald.redb`, the one file with all state; `--data` overrides it.
    pub data_dir: PathBuf,
    /// Writes waiting for the writer; when full, writes get 503 `overloaded`
    /// instead of queueing without bound.
    pub queue_capacity: usize,
    /// Most operations in one transaction (one fsync): larger groups give more
    /// throughput under load and a longer wait for the first request of a group.
    pub max_commit_batch: usize,
    /// redb's page cache in MiB, on top of the kernel's; lower it on a small VPS.
    pub cache_mb: usize,
    /// How often the retention pass (`events.retention`, `webhooks.retention`,
    /// `webhooks.dead_letter_retention`, `mail.body_retention`,
    /// `mail.feedback_retention`) runs.
    pub prune_interval: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./herald-data"),
            queue_capacity: 16_384,
            max_commit_batch: 4_096,
            cache_mb: 256,
            prune_interval: "1m".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// Largest single event (its JSON text), and largest `POST /v1/events` body.
    pub max_event_bytes: usize,
    /// Largest request body, which bounds `POST /v1/events/batch`.
    pub max_request_bytes: usize,
    /// Most events in one `POST /v1/events/batch`.
    pub max_batch_events: usize,
    /// Delete events received longer ago than this, unless a delivery of theirs
    /// is pending or failed; `None` keeps them forever.
    pub retention: Option<String>,
}

impl Default for EventsSection {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_batch_events: 1_000,
            retention: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// How log lines look; `auto` picks by whether stderr is a terminal.
    pub format: LogFormat,
    /// A level or a filter such as `info,herald=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, compact lines otherwise (journald adds its own timestamps).
    Auto,
    /// Full lines, coloured on a terminal: for reading by eye.
    Pretty,
    /// Shorter lines, never coloured: for journald and files.
    Compact,
    /// One JSON object per line, its fields at the top level, for log shippers.
    Json,
}

/// Settings after validation: every value has its final type and range.
#[derive(Debug, Clone)]
pub struct Config {
    /// The private API's address; a port of 0 lets the kernel choose.
    pub listen: SocketAddr,
    /// Every configured key with what it grants: `server.api_keys` and
    /// `HERALD_API_KEYS` as unscoped admins, then `[[server.keys]]`. Empty
    /// only on loopback.
    pub keys: Vec<KeySetting>,
    /// Requests served at once per listener; further ones wait for a slot.
    pub max_connections: usize,
    /// Connections per listener waiting for a request head; the oldest is
    /// closed for a new one.
    pub max_idle_connections: usize,
    /// Connections per listener from one IP address.
    pub max_connections_per_peer: usize,
    /// Time a client has to send its request headers, from accept or from
    /// the end of the previous answer.
    pub header_timeout: Duration,
    /// Time a client has to send a body before it gets 408.
    pub body_timeout: Duration,
    /// How long in-flight requests may finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// Holds `herald.redb`, and the outbox unless `mail.outbox` is set.
    pub data_dir: PathBuf,
    /// Where state lives: the redb file, or a PostgreSQL database.
    pub backend: store::Backend,
    /// Writes the writer's queue holds; beyond it they are refused as overloaded.
    pub queue_capacity: usize,
    /// Most operations the writer commits in one transaction.
    pub max_commit_batch: usize,
    /// redb's own page cache in bytes (`cache_mb` MiB), on top of the kernel's.
    pub cache_bytes: usize,
    /// Size limits of the event API.
    pub limits: EventLimits,
    /// `auto` is resolved when logging starts, by whether stderr is a terminal.
    pub log_format: LogFormat,
    /// A level or filter `EnvFilter` accepts; `RUST_LOG` still overrides it.
    pub log_level: String,
    /// What the webhook dispatcher and every attempt follow.
    pub webhooks: WebhookSettings,
    /// Streams, and what the mail workers follow.
    pub mail: MailSettings,
    /// The configured `url`, or a default the daemon completes once bound.
    pub public: PublicSettings,
    /// Sources and limits of ingestion, and the upkeep's timing.
    pub tracking: TrackingSettings,
    /// How long events, deliveries and mail bodies are kept.
    pub retention: RetentionSettings,
    /// The ESPs whose feedback webhooks are accepted, with their keys.
    pub feedback: crate::feedback::settings::FeedbackSettings,
    /// How long a dashboard session lasts after its sign-in.
    pub admin_session_ttl: Duration,
}

/// A configured API key and what it grants.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySetting {
    pub key: String,
    pub role: Role,
    /// `Some`: the key sees and changes only this tenant's objects.
    pub tenant: Option<String>,
}

// Written by hand so that no debug print of the config shows a key.
impl std::fmt::Debug for KeySetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySetting")
            .field("key", &"[redacted]")
            .field("role", &self.role)
            .field("tenant", &self.tenant)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Largest event JSON, alone or in a batch; at most `max_request_bytes`.
    pub max_event_bytes: usize,
    /// Largest batch request body.
    pub max_request_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
}

impl Config {
    /// The file's path inside the data directory; one file holds all state.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("herald.redb")
    }

    /// Whether the private API may run without keys: only when nobody off this
    /// machine can reach it.
    pub fn is_unauthenticated(&self) -> bool {
        self.keys.is_empty()
    }

    /// A key that may take backups: the first unscoped admin key.
    pub fn admin_key(&self) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.role == Role::Admin && k.tenant.is_none())
            .map(|k| k.key.as_str())
    }
}

/// Overrides given on the command line, applied after the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`: replaces `server.listen`, checked like it.
    pub listen: Option<String>,
    /// `--data`: replaces `storage.data_dir`.
    pub data_dir: Option<PathBuf>,
}

pub fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

pub fn parse_str(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| describe_parse_error(text, &e))
}

/// Where the file is wrong and what was expected, without any of its
/// values: toml's own message quotes the offending line, and serde's quote
/// the offending value, and either may be a password, a key or a token.
fn describe_parse_error(text: &str, e: &toml::de::Error) -> String {
    let mut place = String::new();
    if let Some(span) = e.span() {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        place = format!("line {line}, column {column}");
        if let Some(key) = key_of_line(before, text) {
            place.push_str(&format!(" ({key})"));
        }
        place.push_str(": ");
    }
    format!("{place}{}", without_values(e.message()))
}

/// The dotted key being set on the line where `before` ends, when that line
/// and its table header are plain `key = …` and `[table]` lines.
fn key_of_line(before: &str, text: &str) -> Option<String> {
    let start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let is_key = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if !is_key(key) {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        None => Some(key.to_owned()),
        Some(table) if is_key(table) => Some(format!("{table}.{key}")),
        Some(_) => None,
    }
}

/// A parser message with what it quotes of the file removed. What follows
/// `expected` is the schema's (key names, variants) and stays; so does the
/// name of an unknown key, which is a key, not a value.
fn without_values(message: &str) -> String {
    let (found, expected) = match message.find(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    if found.starts_with("unknown field `") {
        return message.to_owned();
    }
    let mut kept = String::with_capacity(found.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in found.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' || c == '\'' => quote = Some(c),
            None => kept.push(c),
        }
    }
    let kept = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{}{expected}", kept.trim_end_matches([' ', ':']))
}

/// Loads the file (or the embedded defaults), applies overrides and the
/// environment, and validates the result.
pub fn load(
    path: Option<&Path>,
    overrides: &Overrides,
    env_keys: Option<&str>,
) -> Result<Config, ConfigError> {
    let mut file = match path {
        Some(p) => parse_file(p)?,
        None => FileConfig::default(),
    };
    if let Some(listen) = &overrides.listen {
        file.server.listen = listen.clone();
    }
    if let Some(dir) = &overrides.data_dir {
        file.storage.data_dir = dir.clone();
    }
    validate(file, env_keys)
}

pub fn validate(file: FileConfig, env_keys: Option<&str>) -> Result<Config, ConfigError> {
    let FileConfig {
        server,
        storage,
        store,
        events,
        log,
        webhooks,
        mail,
        public,
        tracking,
        feedback,
        admin,
    } = file;
    let retention = retention::validate_retention(retention::RetentionKeys {
        events: events.retention.as_deref(),
        deliveries: webhooks.retention.as_deref(),
        dead_letters: webhooks.dead_letter_retention.as_deref(),
        mail_bodies: mail.body_retention.as_deref(),
        feedback: mail.feedback_retention.as_deref(),
        interval: &storage.prune_interval,
    })?;
    let webhooks = validate_webhooks(webhooks)?;
    let backend = store::validate_store(store, std::env::var(store::POSTGRES_URL_ENV).ok())?;

    let listen: SocketAddr = server.listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("`{}` is not an address like 127.0.0.1:8425", server.listen),
        )
    })?;

    let mut api_keys = server.api_keys;
    if let Some(env) = env_keys {
        api_keys.extend(
            env.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
    }
    for key in &api_keys {
        if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "server.api_keys",
                "each key needs at least 16 printable ASCII characters without spaces",
            ));
        }
    }
    let mut keys: Vec<KeySetting> = api_keys
        .into_iter()
        .map(|key| KeySetting {
            key,
            role: Role::Admin,
            tenant: None,
        })
        .collect();
    for (i, section) in server.keys.into_iter().enumerate() {
        let setting = validate_key(i, section, &|name| std::env::var(name).ok())?;
        if keys.iter().any(|k| k.key == setting.key) {
            return Err(invalid(
                format!("server.keys[{i}]"),
                "this key is configured twice; every key must be different",
            ));
        }
        keys.push(setting);
    }
    if keys.is_empty() && !listen.ip().is_loopback() {
        return Err(invalid(
            "server.listen",
            format!(
                "{listen} is reachable from other machines but no API key is configured; \
                 set server.api_keys or {API_KEYS_ENV}, or listen on a loopback address"
            ),
        ));
    }

    if storage.data_dir.as_os_str().is_empty() {
        return Err(invalid("storage.data_dir", "must not be empty"));
    }
    let mail = validate_mail(mail, &storage.data_dir)?;
    check_owner_alerts(&webhooks, &mail)?;
    let public = validate_public(public, listen)?;
    check_unsubscribe_links(&mail, &public)?;
    let tracking = validate_tracking(tracking)?;
    let feedback = feedback::validate_feedback(feedback)?;
    if events.max_event_bytes > events.max_request_bytes {
        return Err(invalid(
            "events.max_event_bytes",
            "must not exceed events.max_request_bytes",
        ));
    }

    let level = log.level.trim().to_owned();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(invalid(
            "log.level",
            format!("`{level}` is not a level or filter such as \"info\" or \"herald=debug\""),
        ));
    }

    Ok(Config {
        listen,
        keys,
        max_connections: in_range("server.max_connections", server.max_connections, 1, 1 << 20)?,
        max_idle_connections: in_range(
            "server.max_idle_connections",
            server.max_idle_connections,
            1,
            1 << 20,
        )?,
        max_connections_per_peer: in_range(
            "server.max_connections_per_peer",
            server.max_connections_per_peer,
            1,
            1 << 20,
        )?,
        header_timeout: duration(
            "server.header_timeout",
            &server.header_timeout,
            Duration::from_secs(300),
        )?,
        body_timeout: duration(
            "server.body_timeout",
            &server.body_timeout,
            Duration::from_secs(600),
        )?,
        shutdown_grace: duration(
            "server.shutdown_grace",
            &server.shutdown_grace,
            Duration::from_secs(600),
        )?,
        data_dir: storage.data_dir,
        backend,
        queue_capacity: in_range("storage.queue_capacity", storage.queue_capacity, 1, 1 << 22)?,
        max_commit_batch: in_range(
            "storage.max_commit_batch",
            storage.max_commit_batch,
            1,
            1 << 16,
        )?,
        cache_bytes: in_range("storage.cache_mb", storage.cache_mb, 16, 1 << 20)? << 20,
        limits: EventLimits {
            max_event_bytes: in_range(
                "events.max_event_bytes",
                events.max_event_bytes,
                1024,
                64 << 20,
            )?,
            max_request_bytes: in_range(
                "events.max_request_bytes",
                events.max_request_bytes,
                1024,
                256 << 20,
            )?,
            max_batch_events: in_range(
                "events.max_batch_events",
                events.max_batch_events,
                1,
                100_000,
            )?,
        },
        log_format: log.format,
        log_level: level,
        webhooks,
        mail,
        public,
        tracking,
        feedback,
        retention,
        admin_session_ttl: duration(
            "admin.session_ttl",
            &admin.session_ttl,
            Duration::from_secs(30 * 24 * 3600),
        )?,
    })
}

/// Checks one `[[server.keys]]` table. No message quotes the key: errors
/// end up in logs and terminals.
fn validate_key(
    index: usize,
    section: KeySection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KeySetting, ConfigError> {
    let at = |field: &str| format!("server.keys[{index}].{field}");
    let key = match (section.key, section.key_env) {
        (Some(key), None) => key,
        (None, Some(name)) => env(&name).ok_or_else(|| {
            invalid(
                at("key_env"),
                "the environment variable it names is not set",
            )
        })?,
        _ => {
            return Err(invalid(
                format!("server.keys[{index}]"),
                "set exactly one of `key` and `key_env`",
            ))
        }
    };
    if key.len() < MIN_SCOPED_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            at("key"),
            format!(
                "needs at least {MIN_SCOPED_KEY_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    let role = Role::parse(&section.role)
        .ok_or_else(|| invalid(at("role"), "must be `admin`, `write` or `read`"))?;
    if let Some(tenant) = &section.tenant {
        if !crate::names::is_valid_tenant(tenant) {
            return Err(invalid(
                at("tenant"),
                "use 1 to 128 letters, digits, `_`, `.`, `:` or `-`",
            ));
        }
    }
    Ok(KeySetting {
        key,
        role,
        tenant: section.tenant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, String> {
        let file = parse_str(text)?;
        validate(file, None).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let cfg = check("").unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            cfg.database_path(),
            PathBuf::from("./herald-data/herald.redb")
        );
        assert!(cfg.is_unauthenticated());
        assert_eq!(cfg.limits.max_event_bytes, 256 * 1024);
        assert_eq!(cfg.limits.max_batch_events, 1000);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = check("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        assert!(err.contains("listn"), "{err}");
        let err = check("[storag]\n").unwrap_err();
        assert!(err.contains("storag"), "{err}");
    }

    #[test]
    fn public_listen_address_needs_keys() {
        let err = check("[server]\nlisten = \"0.0.0.0:8425\"\n").unwrap_err();
        assert!(err.starts_with("server.listen"), "{err}");
        let ok =
            check("[server]\nlisten = \"0.0.0.0:8425\"\napi_keys = [\"0123456789abcdef0123\"]\n");
        assert!(ok.is_ok());
    }

    #[test]
    fn env_keys_are_added_and_short_keys_refused() {
        let cfg = validate(
            FileConfig::default(),
            Some(" k1k1k1k1k1k1k1k1k1 , ,k2k2k2k2k2k2k2k2k2"),
        )
        .unwrap();
        let keys: Vec<&str> = cfg.keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, vec!["k1k1k1k1k1k1k1k1k1", "k2k2k2k2k2k2k2k2k2"]);
        assert!(cfg
            .keys
            .iter()
            .all(|k| k.role == Role::Admin && k.tenant.is_none()));
        let err = validate(FileConfig::default(), Some("short")).unwrap_err();
        assert!(err.to_string().starts_with("server.api_keys"));
    }

    #[test]
    fn scoped_keys_carry_role_and_tenant_and_errors_never_show_them() {
        let key = "acme-write-key-0123456789abc";
        let cfg = check(&format!(
            "[[server.keys]]\nkey = \"{key}\"\nrole = \"write\"\ntenant = \"acme\"\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.keys,
            vec![KeySetting {
                key: key.into(),
                role: Role::Write,
                tenant: Some("acme".into())
            }]
        );
        assert_eq!(cfg.admin_key(), None);
        assert!(!format!("{cfg:?}").contains(key));
        let secret = "s3cr3t-but-too-short";
        for (text, place) in [
            (
                format!("[[server.keys]]\nkey = \"{secret}\"\nrole = \"read\"\n"),
                "server.keys[0].key",
            ),
            (
                format!("[[server.keys]]\nkey = \"{secret}-long-enough\"\nrole = \"root\"\n"),
                "server.keys[0].role",
            ),
            (
                format!(
                    "[[server.keys]]\nkey = \"{secret}-long-enough\"\nrole = \"read\"\ntenant = \"a b\"\n"
                ),
                "server.keys[0].tenant",
            ),
            (
                format!(
                    "[server]\napi_keys = [\"{secret}-long-enough\"]\n[[server.keys]]\nkey = \"{secret}-long-enough\"\nrole = \"read\"\n"
                ),
                "server.keys[0]",
            ),
            (
                "[[server.keys]]\nrole = \"read\"\n".to_owned(),
                "server.keys[0]",
            ),
        ] {
            let err = check(&text).unwrap_err();
            assert!(err.starts_with(place), "{text}: {err}");
            assert!(!err.contains(secret), "{err}");
        }
    }

    #[test]
    fn a_key_may_come_from_the_environment() {
        let section = |name: &str| KeySection {
            key: None,
            key_env: Some(name.into()),
            role: "admin".into(),
            tenant: None,
        };
        let env = |name: &str| (name == "SET").then(|| "from-the-environment-0123456".to_owned());
        let got = validate_key(0, section("SET"), &env).unwrap();
        assert_eq!(got.key, "from-the-environment-0123456");
        let err = validate_key(0, section("UNSET"), &env).unwrap_err();
        assert!(err.to_string().starts_with("server.keys[0].key_env"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "[server]\nheader_timeout = \"soon\"\n",
                "server.header_timeout",
            ),
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            ("[storage]\nqueue_capacity = 0\n", "storage.queue_capacity"),
            (
                "[server]\nmax_connections_per_peer = 0\n",
                "server.max_connections_per_peer",
            ),
            (
                "[server]\nmax_idle_connections = 0\n",
                "server.max_idle_connections",
            ),
            (
                "[events]\nmax_event_bytes = 9999999\n",
                "events.max_event_bytes",
            ),
            ("[log]\nlevel = \"herald=loud\"\n", "log.level"),
        ] {
            let err = check(text).unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
        }
        let err = check("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(
            err.contains("(log.format)") && err.contains("`json`"),
            "{err}"
        );
    }

    #[test]
    fn parse_errors_say_where_and_never_quote_a_value() {
        let secret = "QzXkJvWq";
        for (text, place) in [
            (
                format!("[server]\napi_keys = [\"{secret}\"\n"),
                "server.api_keys",
            ),
            (
                format!("[server]\napi_keys = \"{secret}\"\n"),
                "server.api_keys",
            ),
            (
                format!("[server]\napi_keys = [{secret}]\n"),
                "server.api_keys",
            ),
            (
                format!("[server]\napi_keys = [\"{secret}\", 5]\n"),
                "server.api_keys",
            ),
            (
                format!("[server]\napi_keys = ['{secret}' x]\n"),
                "server.api_keys",
            ),
            (
                format!("[server]\napi_keys = [\n  \"{secret}\"\n  7,\n]\n"),
                "line 4",
            ),
            (
                format!("[server]\napi_keys = [\"a\"]\napi_keys = [\"{secret}\"]\n"),
                "line 3",
            ),
            (
                format!("[server]\nmax_connections = \"{secret}\"\n"),
                "server.max_connections",
            ),
            (format!("[server]\napi_keys = [\"\"\"{secret}\n"), "line 3"),
            (
                format!("[tracking]\nsources = [{{ name = \"web\", write_key = {secret} }}]\n"),
                "tracking.sources",
            ),
            (
                format!("[mail.streams.x]\nrelay = \"smtp://u:{secret}@h\" = 1\n"),
                "mail.streams.x.relay",
            ),
            (format!("{secret}\n"), "line 1"),
        ] {
            let err = check(&text).unwrap_err();
            assert!(err.contains(place), "{text:?}: {err}");
            for fragment in ["QzX", "XkJ", "JvW"] {
                assert!(!err.contains(fragment), "{text:?}: {err}");
            }
        }
    }

    #[test]
    fn relayed_unsubscribe_links_need_a_public_url_and_retention_covers_the_window() {
        let relayed = "[mail.streams.marketing]\nrelay = \"smtp://127.0.0.1:2525\"\n";
        let err = check(relayed).unwrap_err();
        assert!(err.starts_with("public.url"), "{err}");
        assert!(check(&format!(
            "{relayed}[public]\nurl = \"https://m.example.com\"\n"
        ))
        .is_ok());
        assert!(check(&format!("{relayed}unsubscribe = false\n")).is_ok());
        // Without a relay, mail goes to the outbox and links stay local.
        assert!(check("[mail.streams.marketing]\n").is_ok());
        let err = check("[tracking]\nretention = \"1d\"\n").unwrap_err();
        assert!(err.starts_with("tracking.retention"), "{err}");
        assert!(check("[tracking]\nretention = \"30d\"\n").is_ok());
    }

    #[test]
    fn owner_alerts_need_a_configured_stream_that_sends_from_their_domain() {
        let stream = "[mail.streams.alerts]\nfrom_domains = [\"herald.example\"]\n";
        let alerts = |keys: &str| format!("{stream}[webhooks.owner_alerts]\n{keys}");
        let cfg = check(&alerts(
            "stream = \"alerts\"\nfrom = \"Herald <ops@herald.example>\"\n",
        ))
        .unwrap();
        let owner = cfg.webhooks.owner_alerts.expect("configured");
        assert_eq!(owner.portal_link_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(cfg.webhooks.failing_threshold, 10);
        assert!(check("").unwrap().webhooks.owner_alerts.is_none());
        for (keys, key) in [
            (
                "stream = \"nope\"\nfrom = \"ops@herald.example\"\n",
                "webhooks.owner_alerts.stream",
            ),
            (
                "stream = \"alerts\"\nfrom = \"ops@elsewhere.example\"\n",
                "webhooks.owner_alerts.from",
            ),
            (
                "stream = \"alerts\"\nfrom = \"not an address\"\n",
                "webhooks.owner_alerts.from",
            ),
            (
                "stream = \"alerts\"\nfrom = \"ops@herald.example\"\nportal_link_ttl = \"10s\"\n",
                "webhooks.owner_alerts.portal_link_ttl",
            ),
            (
                "stream = \"alerts\"\nfrom = \"ops@herald.example\"\nportal_link_ttl = \"8d\"\n",
                "webhooks.owner_alerts.portal_link_ttl",
            ),
        ] {
            let err = check(&alerts(keys)).unwrap_err();
            assert!(err.starts_with(key), "{keys}: {err}");
        }
        let err = check(&alerts("stream = \"alerts\"\n")).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        let err = check("[webhooks]\nfailing_threshold = 0\n").unwrap_err();
        assert!(err.starts_with("webhooks.failing_threshold"), "{err}");
        assert_eq!(
            check("[webhooks]\nfailing_threshold = 1\n")
                .unwrap()
                .webhooks
                .failing_threshold,
            1
        );
    }
}

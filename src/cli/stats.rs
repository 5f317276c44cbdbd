//! `herald stats`: what an operator looks at first, read from the routes
//! that already answer it (storage, endpoints and their stats, streams,
//! the event log). A tenant key is shown what it may see; the rest says so.

use serde_json::{json, Map, Value};

use super::endpoints::state;
use super::table::{bytes, fields, text, Table};
use super::{CliError, Session};
use crate::api_client::{api_path, ClientError};
use crate::clock;

/// Endpoints whose stats are read one call each; beyond it the list says
/// how many more there are.
const MAX_ENDPOINTS: usize = 200;
/// Events counted in the last hour: one page; more shows as `1000+`.
const EVENT_PAGE: usize = 1000;
const HOUR_MS: i64 = 3_600_000;

/// An answer, or why this key may not read it.
type Section = Result<Value, String>;

/// `Err` with the API's message for a route the key's role or tenant does
/// not allow; any other failure ends the command.
fn section(result: Result<Value, CliError>) -> Result<Section, CliError> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(CliError::Api(ClientError::Refused {
            status: 403,
            message,
            ..
        })) => Ok(Err(message)),
        Err(e) => Err(e),
    }
}

pub(crate) fn run(s: &mut Session) -> Result<String, CliError> {
    let storage = section(s.get("/v1/admin/storage"))?;
    let endpoints = s.get("/v1/endpoints")?;
    let listed: Vec<Value> = endpoints["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut endpoint_stats = Map::new();
    for e in listed.iter().take(MAX_ENDPOINTS) {
        let id = text(&e["id"]);
        let stats = s.get(&api_path(&["v1", "endpoints", &id, "stats"], &[]))?;
        endpoint_stats.insert(id, stats);
    }
    let streams = section(s.get("/v1/streams"))?;
    let since = clock::format_rfc3339(clock::now_ms() - HOUR_MS);
    let limit = EVENT_PAGE.to_string();
    let recent = s.get(&api_path(
        &["v1", "events"],
        &[("since", Some(&since)), ("limit", Some(&limit))],
    ))?;
    let recent_events = json!({
        "count": recent["events"].as_array().map_or(0, Vec::len),
        "more": !recent["next_cursor"].is_null(),
    });
    if s.json {
        let body = json!({
            "storage": storage.as_ref().ok(),
            "endpoints": listed,
            "endpoint_stats": endpoint_stats,
            "streams": streams.as_ref().ok().map(|answer| &answer["streams"]),
            "events_last_hour": recent_events,
        });
        return Ok(format!("{body}\n"));
    }
    Ok(render(
        &storage,
        &listed,
        &endpoint_stats,
        &streams,
        &recent_events,
    ))
}

fn table_rows(storage: &Value, name: &str) -> Option<u64> {
    storage["tables"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)?["rows"]
        .as_u64()
}

fn render(
    storage: &Section,
    endpoints: &[Value],
    endpoint_stats: &Map<String, Value>,
    streams: &Section,
    recent: &Value,
) -> String {
    let sum = |key: &str| -> u64 {
        endpoint_stats
            .values()
            .filter_map(|s| s["deliveries"][key].as_u64())
            .sum()
    };
    let recent_count = format!(
        "{}{}",
        text(&recent["count"]),
        if recent["more"] == json!(true) {
            "+"
        } else {
            ""
        }
    );
    let not_shown = |why: &str| format!("not shown to this key ({why})");
    let (events, queue, store) = match storage {
        Ok(st) => {
            let oldest = st["tables"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["name"] == "events"))
                .map(|t| text(&t["oldest"]["at"]))
                .unwrap_or_else(|| "-".to_owned());
            (
                format!(
                    "{} stored, {recent_count} in the last hour (oldest {oldest})",
                    table_rows(st, "events").unwrap_or(0)
                ),
                format!(
                    "{} jobs scheduled; {} webhook deliveries pending",
                    table_rows(st, "due").unwrap_or(0),
                    sum("pending")
                ),
                format!(
                    "{} file, {} stored, schema version {}",
                    bytes(st["file_bytes"].as_u64().unwrap_or(0)),
                    bytes(st["stored_bytes"].as_u64().unwrap_or(0)),
                    text(&st["schema_version"])
                ),
            )
        }
        Err(why) => (
            format!("{recent_count} in the last hour"),
            format!("{} webhook deliveries pending", sum("pending")),
            not_shown(why),
        ),
    };
    let mut out = fields(
        &[
            ("events", events),
            ("queue", queue),
            ("dead letters", sum("failed").to_string()),
            ("storage", store),
        ],
        120,
    );

    let enabled = endpoints.iter().filter(|e| state(e) == "enabled").count();
    out.push_str(&format!(
        "\nendpoints: {} ({enabled} enabled, {} disabled)\n",
        endpoints.len(),
        endpoints.len() - enabled
    ));
    let mut table = Table::new(&[
        ("ID", 40),
        ("STATE", 8),
        ("URL", 50),
        ("ATTEMPTS 1H", 11),
        ("SUCCESS 1H", 10),
        ("P95 MS", 7),
        ("PENDING", 8),
        ("DEAD", 8),
    ]);
    for e in endpoints.iter().take(MAX_ENDPOINTS) {
        let id = text(&e["id"]);
        let stats = endpoint_stats.get(&id).cloned().unwrap_or(Value::Null);
        let hour = &stats["last_hour"];
        let attempts = hour["attempts"].as_u64().unwrap_or(0);
        let success = match (attempts, hour["succeeded"].as_u64()) {
            (0, _) | (_, None) => "-".to_owned(),
            (n, Some(ok)) => format!("{:.1}%", ok as f64 * 100.0 / n as f64),
        };
        table.row(vec![
            id,
            state(e).to_owned(),
            text(&e["url"]),
            attempts.to_string(),
            success,
            text(&hour["latency_ms"]["p95"]),
            text(&stats["deliveries"]["pending"]),
            text(&stats["deliveries"]["failed"]),
        ]);
    }
    if !table.is_empty() {
        out.push_str(&table.render());
    }
    if endpoints.len() > MAX_ENDPOINTS {
        out.push_str(&format!(
            "… and {} more (herald endpoints list); their deliveries are not counted above\n",
            endpoints.len() - MAX_ENDPOINTS
        ));
    }

    out.push_str("\nmail streams (last 24 hours)\n");
    match streams {
        Ok(body) => {
            let mut table = Table::new(&[
                ("STREAM", 24),
                ("STATE", 10),
                ("SENT", 10),
                ("HARD BOUNCES", 12),
                ("COMPLAINTS", 10),
                ("BOUNCE RATE", 11),
                ("COMPLAINT RATE", 14),
            ]);
            for st in body["streams"].as_array().into_iter().flatten() {
                let w = &st["window_24h"];
                let state = if st["paused"] == json!(true) {
                    "paused"
                } else if st["warning"].is_string() {
                    "warning"
                } else {
                    "sending"
                };
                table.row(vec![
                    text(&st["stream"]),
                    state.to_owned(),
                    text(&w["sent"]),
                    text(&w["hard_bounces"]),
                    text(&w["complaints"]),
                    percent(&w["bounce_rate"]),
                    percent(&w["complaint_rate"]),
                ]);
            }
            if table.is_empty() {
                out.push_str("no streams\n");
            } else {
                out.push_str(&table.render());
            }
        }
        Err(why) => out.push_str(&format!("{}\n", not_shown(why))),
    }
    out
}

fn percent(rate: &Value) -> String {
    match rate.as_f64() {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "-".to_owned(),
    }
}

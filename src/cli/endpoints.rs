//! `herald endpoints list|show|disable|enable|test`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use super::table::{fields, text, Table};
use super::{raw, CliError, Session};
use crate::api_client::api_path;

/// Field values longer than this are cut in `show`.
const FIELD_WIDTH: usize = 100;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Every endpoint the key sees.
    List {
        /// Only this tenant's endpoints.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// One endpoint with its attempts and latency over the last hour and day.
    Show { id: String },
    /// Stop delivering to the endpoint.
    Disable { id: String },
    /// Deliver to the endpoint again.
    Enable { id: String },
    /// Send it a `herald.test` event now and show what it answered.
    Test { id: String },
}

pub(crate) fn run(s: &mut Session, action: Action) -> Result<String, CliError> {
    match action {
        Action::List { tenant } => list(s, tenant.as_deref()),
        Action::Show { id } => show(s, &id),
        Action::Disable { id } => set_enabled(s, &id, false),
        Action::Enable { id } => set_enabled(s, &id, true),
        Action::Test { id } => test(s, &id),
    }
}

fn list(s: &mut Session, tenant: Option<&str>) -> Result<String, CliError> {
    let answer = s.send(
        Method::GET,
        &api_path(&["v1", "endpoints"], &[("tenant", tenant)]),
        None,
    )?;
    if s.json {
        return Ok(raw(&answer));
    }
    let body = answer.json()?;
    let mut table = Table::new(&[
        ("ID", 40),
        ("STATE", 8),
        ("TENANT", 20),
        ("URL", 60),
        ("EVENT TYPES", 30),
        ("DESCRIPTION", 30),
    ]);
    for e in body["endpoints"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&e["id"]),
            state(e).to_owned(),
            text(&e["tenant"]),
            text(&e["url"]),
            event_types(e),
            text(&e["description"]),
        ]);
    }
    if table.is_empty() {
        return Ok("no endpoints\n".to_owned());
    }
    Ok(table.render())
}

pub(crate) fn state(endpoint: &Value) -> &'static str {
    if endpoint["enabled"] == json!(true) {
        "enabled"
    } else {
        "disabled"
    }
}

fn event_types(endpoint: &Value) -> String {
    match endpoint["event_types"].as_array() {
        Some(types) if !types.is_empty() => text(&endpoint["event_types"]),
        _ => "* (every type)".to_owned(),
    }
}

fn show(s: &mut Session, id: &str) -> Result<String, CliError> {
    let endpoint = s.get(&api_path(&["v1", "endpoints", id], &[]))?;
    let stats = s.get(&api_path(&["v1", "endpoints", id, "stats"], &[]))?;
    if s.json {
        return Ok(format!(
            "{}\n",
            json!({"endpoint": endpoint, "stats": stats})
        ));
    }
    let mut state_text = state(&endpoint).to_owned();
    if let Some(reason) = endpoint["disabled_reason"].as_str() {
        state_text.push_str(&format!(" ({reason})"));
    }
    let headers: Vec<&str> = endpoint["headers"]
        .as_object()
        .map(|h| h.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut out = fields(
        &[
            ("id", text(&endpoint["id"])),
            ("url", text(&endpoint["url"])),
            ("state", state_text),
            ("tenant", text(&endpoint["tenant"])),
            ("event types", event_types(&endpoint)),
            ("sources", text(&endpoint["sources"])),
            ("description", text(&endpoint["description"])),
            (
                "headers",
                if headers.is_empty() {
                    "-".to_owned()
                } else {
                    headers.join(", ")
                },
            ),
            (
                "rate limit",
                match endpoint["rate_limit_per_sec"].as_u64() {
                    Some(n) => format!("{n} a second"),
                    None => "none".to_owned(),
                },
            ),
            (
                "timeout",
                match endpoint["timeout_secs"].as_u64() {
                    Some(n) => format!("{n} s"),
                    None => "the configured default".to_owned(),
                },
            ),
            ("created", text(&endpoint["created_at"])),
            ("updated", text(&endpoint["updated_at"])),
        ],
        FIELD_WIDTH,
    );
    out.push('\n');
    out.push_str(&attempts_table(&stats).render());
    let d = &stats["deliveries"];
    out.push_str(&format!(
        "\ndeliveries: {} pending, {} succeeded, {} failed\n",
        text(&d["pending"]),
        text(&d["succeeded"]),
        text(&d["failed"])
    ));
    Ok(out)
}

fn attempts_table(stats: &Value) -> Table {
    let mut table = Table::new(&[
        ("WINDOW", 10),
        ("ATTEMPTS", 10),
        ("SUCCEEDED", 10),
        ("FAILED", 10),
        ("NETWORK ERRORS", 14),
        ("P50 MS", 8),
        ("P95 MS", 8),
        ("P99 MS", 8),
    ]);
    for (label, key) in [("last hour", "last_hour"), ("last day", "last_day")] {
        let w = &stats[key];
        let latency = &w["latency_ms"];
        table.row(vec![
            label.to_owned(),
            text(&w["attempts"]),
            text(&w["succeeded"]),
            text(&w["failed"]),
            text(&w["network_errors"]),
            text(&latency["p50"]),
            text(&latency["p95"]),
            text(&latency["p99"]),
        ]);
    }
    table
}

fn set_enabled(s: &mut Session, id: &str, enabled: bool) -> Result<String, CliError> {
    let action = if enabled { "enable" } else { "disable" };
    let answer = s.send(
        Method::POST,
        &api_path(&["v1", "endpoints", id, action], &[]),
        None,
    )?;
    if s.json {
        return Ok(raw(&answer));
    }
    let endpoint = answer.json()?;
    let mut line = format!("{}: {}", text(&endpoint["id"]), state(&endpoint));
    if let Some(reason) = endpoint["disabled_reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    Ok(format!("{line}\n"))
}

fn test(s: &mut Session, id: &str) -> Result<String, CliError> {
    let answer = s.send(
        Method::POST,
        &api_path(&["v1", "endpoints", id, "test"], &[]),
        None,
    )?;
    if s.json {
        return Ok(raw(&answer));
    }
    let outcome = answer.json()?;
    let status = outcome["status_code"].as_u64().unwrap_or(0);
    let summary = if status == 0 {
        format!(
            "no answer ({}) after {} ms",
            text(&outcome["error_kind"]),
            text(&outcome["latency_ms"])
        )
    } else {
        let verdict = if (200..300).contains(&status) {
            "success"
        } else {
            "failure"
        };
        format!(
            "answered {status} in {} ms: {verdict}",
            text(&outcome["latency_ms"])
        )
    };
    let mut out = format!("{id}: {summary}\n");
    out.push_str(&fields(
        &[
            ("error", text(&outcome["error"])),
            ("response", text(&outcome["response"])),
        ],
        FIELD_WIDTH,
    ));
    Ok(out)
}

//! `herald emails show` and `herald suppressions list|add|remove`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Map, Value};

use super::table::{fields, text, Table};
use super::{raw, CliError, Session};
use crate::api_client::api_path;

const FIELD_WIDTH: usize = 100;

#[derive(Subcommand, Debug)]
pub enum EmailAction {
    /// One message: its fields and its timeline (queued, each relay reply,
    /// each ESP event).
    Show { id: String },
}

#[derive(Subcommand, Debug)]
pub enum SuppressionAction {
    /// The global list, or a tenant's with --tenant.
    List {
        /// Only entries for this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Only entries with this reason (hard_bounce, complaint, unsubscribe, soft_bounce_limit, manual, esp_suppressed).
        #[arg(long)]
        reason: Option<String>,
        /// This tenant's list instead of the global one.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many (1–1000; the API's default is 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after this cursor (printed below a full page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Stop mail to an address, on every stream or one.
    Add {
        address: String,
        /// Only for this stream (default: every stream).
        #[arg(long)]
        stream: Option<String>,
        /// Why (default: manual).
        #[arg(long)]
        reason: Option<String>,
        /// On this tenant's list instead of the global one.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Allow mail to an address again.
    Remove {
        address: String,
        /// The entry for this stream (default: the one for every stream).
        #[arg(long)]
        stream: Option<String>,
        /// From this tenant's list instead of the global one.
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(crate) fn run_email(s: &mut Session, action: EmailAction) -> Result<String, CliError> {
    let EmailAction::Show { id } = action;
    let answer = s.send(Method::GET, &api_path(&["v1", "emails", &id], &[]), None)?;
    if s.json {
        return Ok(raw(&answer));
    }
    Ok(email(&answer.json()?))
}

fn email(m: &Value) -> String {
    let mut status = text(&m["status"]);
    if m["flagged"] == Value::Bool(true) {
        status.push_str(" (flagged: a sender-side problem)");
    }
    let mut out = fields(
        &[
            ("id", text(&m["id"])),
            ("status", status),
            ("stream", text(&m["stream"])),
            ("tenant", text(&m["tenant"])),
            ("from", text(&m["from"])),
            ("to", text(&m["to"])),
            ("subject", text(&m["subject"])),
            ("message-id", text(&m["message_id"])),
            ("created", text(&m["created_at"])),
            ("next attempt", text(&m["next_attempt_at"])),
            ("tags", tags(&m["tags"])),
        ],
        FIELD_WIDTH,
    );
    out.push('\n');
    out.push_str(&timeline(m).render());
    out
}

fn tags(value: &Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".to_owned(),
    }
}

/// Queued, then every relay reply, then every ESP event, in time order.
fn timeline(m: &Value) -> Table {
    let mut steps: Vec<(String, String, String)> = vec![(
        text(&m["created_at"]),
        "queued".to_owned(),
        format!("stream {}", text(&m["stream"])),
    )];
    for a in m["attempts"].as_array().into_iter().flatten() {
        // The enhanced code is read out of the reply's text, which shows it.
        steps.push((
            text(&a["at"]),
            format!("relay: {}", text(&a["outcome"])),
            format!(
                "{} {} ({} ms)",
                text(&a["code"]),
                text(&a["text"]),
                text(&a["latency_ms"])
            ),
        ));
    }
    for f in m["feedback"].as_array().into_iter().flatten() {
        let at = match &f["occurred_at"] {
            Value::Null => &f["received_at"],
            at => at,
        };
        steps.push((
            text(at),
            format!("{}: {}", text(&f["provider"]), text(&f["kind"])),
            text(&f["detail"]),
        ));
    }
    // RFC 3339 in UTC with milliseconds sorts as the instants do; the sort
    // is stable, so equal times keep queued → relay → ESP.
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    let mut table = Table::new(&[("AT", 24), ("WHAT", 28), ("DETAIL", 80)]);
    for (at, what, detail) in steps {
        table.row(vec![at, what, detail]);
    }
    table
}

pub(crate) fn run_suppression(
    s: &mut Session,
    action: SuppressionAction,
) -> Result<String, CliError> {
    match action {
        SuppressionAction::List {
            stream,
            reason,
            tenant,
            limit,
            after,
        } => {
            let limit = limit.map(|l| l.to_string());
            let path = api_path(
                &["v1", "suppressions"],
                &[
                    ("stream", stream.as_deref()),
                    ("reason", reason.as_deref()),
                    ("tenant", tenant.as_deref()),
                    ("limit", limit.as_deref()),
                    ("after", after.as_deref()),
                ],
            );
            let answer = s.send(Method::GET, &path, None)?;
            if s.json {
                return Ok(raw(&answer));
            }
            Ok(suppressions(&answer.json()?))
        }
        SuppressionAction::Add {
            address,
            stream,
            reason,
            tenant,
        } => {
            let mut body = Map::new();
            if let Some(stream) = stream {
                body.insert("stream".into(), stream.into());
            }
            if let Some(reason) = reason {
                body.insert("reason".into(), reason.into());
            }
            let answer = s.send(
                Method::PUT,
                &api_path(
                    &["v1", "suppressions", &address],
                    &[("tenant", tenant.as_deref())],
                ),
                Some(&Value::Object(body)),
            )?;
            if s.json {
                return Ok(raw(&answer));
            }
            let entry = answer.json()?;
            let news = if answer.status == 201 {
                "suppressed"
            } else {
                "already suppressed"
            };
            Ok(format!(
                "{}: {news} for {} on {} ({})\n",
                text(&entry["address"]),
                streams(&entry["stream"]),
                list_name(&entry["tenant"]),
                text(&entry["reason"])
            ))
        }
        SuppressionAction::Remove {
            address,
            stream,
            tenant,
        } => {
            let answer = s.send(
                Method::DELETE,
                &api_path(
                    &["v1", "suppressions", &address],
                    &[("stream", stream.as_deref()), ("tenant", tenant.as_deref())],
                ),
                None,
            )?;
            if s.json {
                return Ok(raw(&answer));
            }
            let stream = stream.map_or(Value::Null, Value::String);
            let tenant = tenant.map_or(Value::Null, Value::String);
            Ok(format!(
                "{address}: removed for {} from {}\n",
                streams(&stream),
                list_name(&tenant)
            ))
        }
    }
}

fn streams(stream: &Value) -> String {
    match stream.as_str() {
        Some(name) if !name.is_empty() => format!("stream {name}"),
        _ => "every stream".to_owned(),
    }
}

fn list_name(tenant: &Value) -> String {
    match tenant.as_str() {
        Some(tenant) => format!("tenant {tenant}'s list"),
        None => "the global list".to_owned(),
    }
}

fn suppressions(page: &Value) -> String {
    let mut table = Table::new(&[
        ("ADDRESS", 50),
        ("STREAM", 20),
        ("REASON", 18),
        ("TENANT", 20),
        ("CREATED", 24),
        ("DETAIL", 40),
    ]);
    for e in page["suppressions"].as_array().into_iter().flatten() {
        let stream = match e["stream"].as_str() {
            Some(name) => name.to_owned(),
            None => "(all)".to_owned(),
        };
        table.row(vec![
            text(&e["address"]),
            stream,
            text(&e["reason"]),
            text(&e["tenant"]),
            text(&e["created_at"]),
            text(&e["detail"]),
        ]);
    }
    if table.is_empty() {
        return "no suppressions\n".to_owned();
    }
    let mut out = table.render();
    if let Some(next) = page["next_cursor"].as_str() {
        out.push_str(&format!("more: herald suppressions list --after {next}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_timeline_orders_relay_replies_and_esp_events_by_time() {
        let m = json!({
            "created_at": "2026-11-22T10:00:00.000Z", "stream": "transactional",
            "attempts": [
                {"at": "2026-11-22T10:00:01.000Z", "code": 451, "enhanced": "4.7.1",
                 "text": "4.7.1 try later", "latency_ms": 3, "outcome": "deferred"},
                {"at": "2026-11-22T10:05:00.000Z", "code": 250, "enhanced": null,
                 "text": "ok", "latency_ms": 2, "outcome": "sent"}],
            "feedback": [
                {"provider": "ses", "kind": "complaint", "detail": "abuse",
                 "occurred_at": null, "received_at": "2026-11-22T10:04:00.000Z"}]
        });
        let shown = timeline(&m).render();
        let order: Vec<usize> = ["queued", "relay: deferred", "ses: complaint", "relay: sent"]
            .iter()
            .map(|w| shown.find(w).unwrap_or_else(|| panic!("{w} in {shown}")))
            .collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "{shown}");
        assert!(shown.contains("451 4.7.1 try later (3 ms)"), "{shown}");
    }
}

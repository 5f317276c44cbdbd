//! `herald deliveries show|retry` and `herald dlq list|recover`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use super::table::{fields, text, Table};
use super::{raw, CliError, Session};
use crate::api_client::api_path;
use crate::clock;

const FIELD_WIDTH: usize = 100;

#[derive(Subcommand, Debug)]
pub enum DeliveryAction {
    /// One delivery with every attempt: time, status, latency, error, response.
    Show { id: String },
    /// Make one attempt now, whatever its schedule, and show it.
    Retry { id: String },
}

#[derive(Subcommand, Debug)]
pub enum DeadLetterAction {
    /// Deliveries whose retries ran out, oldest first.
    List {
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
        /// At most this many (1–1000; the API's default is 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after this cursor (printed below a full page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Queue an endpoint's failed deliveries made since a time again.
    Recover {
        /// The endpoint's id.
        endpoint: String,
        /// RFC 3339 (2026-11-22T10:00:00Z) or a duration ago (2h, 3d).
        #[arg(long)]
        since: String,
    },
}

pub(crate) fn run_delivery(s: &mut Session, action: DeliveryAction) -> Result<String, CliError> {
    match action {
        DeliveryAction::Show { id } => {
            let answer = s.send(
                Method::GET,
                &api_path(&["v1", "deliveries", &id], &[]),
                None,
            )?;
            if s.json {
                return Ok(raw(&answer));
            }
            Ok(delivery(&answer.json()?))
        }
        DeliveryAction::Retry { id } => {
            let answer = s.send(
                Method::POST,
                &api_path(&["v1", "deliveries", &id, "retry"], &[]),
                None,
            )?;
            if s.json {
                return Ok(raw(&answer));
            }
            let d = answer.json()?;
            let attempts = d["attempts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let mut out = match attempts.last() {
                Some(a) => format!(
                    "{}: attempt {} {}; the delivery is {}\n\n",
                    text(&d["id"]),
                    text(&a["attempt"]),
                    outcome(a),
                    text(&d["status"])
                ),
                None => format!("{}: {}\n\n", text(&d["id"]), text(&d["status"])),
            };
            out.push_str(&attempts_table(attempts).render());
            Ok(out)
        }
    }
}

/// `answered 200 in 12 ms` or `failed (connect) after 3 ms`.
fn outcome(attempt: &Value) -> String {
    match attempt["status_code"].as_u64() {
        Some(code) if code > 0 => format!("answered {code} in {} ms", text(&attempt["latency_ms"])),
        _ => format!(
            "got no answer ({}) after {} ms",
            text(&attempt["error_kind"]),
            text(&attempt["latency_ms"])
        ),
    }
}

fn delivery(d: &Value) -> String {
    let mut out = fields(
        &[
            ("id", text(&d["id"])),
            ("status", text(&d["status"])),
            ("endpoint", text(&d["endpoint_id"])),
            (
                "event",
                format!("{} ({})", text(&d["event_id"]), text(&d["event_type"])),
            ),
            ("created", text(&d["created_at"])),
            ("next attempt", text(&d["next_attempt_at"])),
        ],
        FIELD_WIDTH,
    );
    out.push('\n');
    let attempts = d["attempts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if attempts.is_empty() {
        out.push_str("no attempts yet\n");
    } else {
        out.push_str(&attempts_table(attempts).render());
    }
    out
}

/// The status column: the HTTP status, or what went wrong without one.
fn status_cell(attempt: &Value) -> String {
    match attempt["status_code"].as_u64() {
        Some(code) if code > 0 => code.to_string(),
        _ => text(&attempt["error_kind"]),
    }
}

fn attempts_table(attempts: &[Value]) -> Table {
    let mut table = Table::new(&[
        ("#", 4),
        ("AT", 24),
        ("STATUS", 16),
        ("MS", 7),
        ("TRIGGER", 9),
        ("ERROR / RESPONSE", 70),
    ]);
    for a in attempts {
        let said = match a["error"].as_str() {
            Some(error) if !error.is_empty() => error.to_owned(),
            _ => text(&a["response"]),
        };
        table.row(vec![
            text(&a["attempt"]),
            text(&a["at"]),
            status_cell(a),
            text(&a["latency_ms"]),
            text(&a["trigger"]),
            said,
        ]);
    }
    table
}

pub(crate) fn run_dead_letters(
    s: &mut Session,
    action: DeadLetterAction,
) -> Result<String, CliError> {
    match action {
        DeadLetterAction::List {
            endpoint,
            limit,
            after,
        } => {
            let limit = limit.map(|l| l.to_string());
            let path = api_path(
                &["v1", "dead-letters"],
                &[
                    ("endpoint", endpoint.as_deref()),
                    ("limit", limit.as_deref()),
                    ("after", after.as_deref()),
                ],
            );
            let answer = s.send(Method::GET, &path, None)?;
            if s.json {
                return Ok(raw(&answer));
            }
            Ok(dead_letters(&answer.json()?))
        }
        DeadLetterAction::Recover { endpoint, since } => {
            let since = since_timestamp(&since, clock::now_ms())?;
            let answer = s.send(
                Method::POST,
                &api_path(&["v1", "endpoints", &endpoint, "recover"], &[]),
                Some(&json!({ "since": since })),
            )?;
            if s.json {
                return Ok(raw(&answer));
            }
            let done = answer.json()?;
            let mut out = format!(
                "{endpoint}: {} failed deliveries since {since} queued again\n",
                text(&done["requeued"])
            );
            if done["more"] == json!(true) {
                out.push_str("more may remain: run the same command again\n");
            }
            Ok(out)
        }
    }
}

fn dead_letters(page: &Value) -> String {
    let mut table = Table::new(&[
        ("ID", 24),
        ("ENDPOINT", 40),
        ("EVENT TYPE", 30),
        ("ATTEMPTS", 8),
        ("LAST", 16),
        ("LAST ERROR / RESPONSE", 50),
        ("CREATED", 24),
    ]);
    for d in page["deliveries"].as_array().into_iter().flatten() {
        let attempts = d["attempts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let (last, said) = match attempts.last() {
            Some(a) => (
                status_cell(a),
                match a["error"].as_str() {
                    Some(error) if !error.is_empty() => error.to_owned(),
                    _ => text(&a["response"]),
                },
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        table.row(vec![
            text(&d["id"]),
            text(&d["endpoint_id"]),
            text(&d["event_type"]),
            attempts.len().to_string(),
            last,
            said,
            text(&d["created_at"]),
        ]);
    }
    if table.is_empty() {
        return "no dead letters\n".to_owned();
    }
    let mut out = table.render();
    if let Some(next) = page["next_cursor"].as_str() {
        out.push_str(&format!("more: herald dlq list --after {next}\n"));
    }
    out
}

/// `--since` as the API takes it: an RFC 3339 timestamp as given (in UTC),
/// or a duration (`2h`, `3days`) before `now_ms`.
fn since_timestamp(given: &str, now_ms: i64) -> Result<String, CliError> {
    if let Some(ms) = clock::parse_rfc3339(given) {
        return Ok(clock::format_rfc3339(ms));
    }
    let ago = humantime::parse_duration(given).map_err(|_| {
        CliError::Usage(format!(
            "--since: `{}` is neither an RFC 3339 timestamp nor a duration like 2h",
            given.chars().take(64).collect::<String>()
        ))
    })?;
    let ms = i64::try_from(ago.as_millis())
        .ok()
        .and_then(|ago| now_ms.checked_sub(ago))
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| CliError::Usage("--since: that duration reaches before 1970".to_owned()))?;
    Ok(clock::format_rfc3339(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_timestamps_and_durations_ago() {
        let now = clock::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(
            since_timestamp("2026-11-22T11:30:00+02:00", now).unwrap(),
            "2026-11-22T09:30:00.000Z"
        );
        assert_eq!(
            since_timestamp("2h", now).unwrap(),
            "2026-11-22T08:00:00.000Z"
        );
        assert_eq!(
            since_timestamp("1d", now).unwrap(),
            "2026-11-21T10:00:00.000Z"
        );
        for bad in ["yesterday", "", "-2h", "100000000d"] {
            assert!(
                matches!(since_timestamp(bad, now), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn attempts_show_the_status_or_what_went_wrong() {
        let answered = json!({"attempt": 1, "status_code": 503, "latency_ms": 4,
                              "error": null, "error_kind": null, "response": "busy"});
        let silent = json!({"attempt": 2, "status_code": 0, "latency_ms": 1,
                            "error": "connection refused", "error_kind": "connect", "response": null});
        assert_eq!(outcome(&answered), "answered 503 in 4 ms");
        assert_eq!(outcome(&silent), "got no answer (connect) after 1 ms");
        let shown = attempts_table(&[answered, silent]).render();
        assert!(shown.contains("503") && shown.contains("busy"), "{shown}");
        assert!(
            shown.contains("connect") && shown.contains("connection refused"),
            "{shown}"
        );
    }
}

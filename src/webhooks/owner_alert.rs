//! Emails to an endpoint's owner when it keeps failing or is disabled:
//! composed here and queued through the mail ledger, in the transaction
//! that saw it happen, at most once a UTC day per endpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use super::endpoint::ID_PREFIX as ENDPOINT_ID_PREFIX;
use super::policy::OwnerAlert;
use super::settings::OwnerAlertSettings;
use crate::clock;
use crate::ids;
use crate::mail::ledger::{self as mail_ledger, Queued};
use crate::mail::request::{self, EmailInput, Recipients};
use crate::mail::settings::MailSettings;
use crate::store::mail_txn::MailTxn;
use crate::store::records::{EndpointRecord, EndpointStreakRecord};
use crate::store::StoreError;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Longer URLs are cut in the subject; the body has them whole.
const SUBJECT_URL_CHARS: usize = 200;
/// The tag every alert carries, so alerts can be told from other mail.
pub const ALERT_TAG: (&str, &str) = ("herald", "endpoint_alert");

/// Makes a portal token for (tenant, expiry in Unix ms).
pub type MintToken = Box<dyn Fn(&str, i64) -> String + Send + Sync>;

/// Signed links to a tenant's portal, put into its endpoints' alerts. The
/// token is made by the caller (`portal_link::PortalKey` in the daemon), so
/// composing an alert needs no key.
pub struct PortalLinks {
    /// `public.url` when configured, else `http://` and the private listener's address.
    pub base_url: String,
    pub ttl: Duration,
    pub mint: MintToken,
}

impl PortalLinks {
    /// A link to `tenant`'s portal valid for the configured time from `now_ms`.
    fn link(&self, tenant: &str, now_ms: i64) -> (String, i64) {
        let expires_at_ms = now_ms.saturating_add(self.ttl.as_millis() as i64);
        let token = (self.mint)(tenant, expires_at_ms);
        (portal_url(&self.base_url, &token), expires_at_ms)
    }
}

/// Where a portal token is opened.
pub fn portal_url(base_url: &str, token: &str) -> String {
    format!("{}/portal/{token}", base_url.trim_end_matches('/'))
}

/// What alerting needs: where alerts go out from, the mail settings every
/// request is checked against, and portal links when they can be made.
pub struct OwnerAlerts {
    pub settings: OwnerAlertSettings,
    pub mail: MailSettings,
    pub portal: Option<PortalLinks>,
}

/// Alerts `endpoint`'s owner about `cause`, unless it has no owner or was
/// alerted today; `streak` (the endpoint's, already updated for this
/// attempt) records the day. A refusal by the mail path (a suppressed
/// owner) still counts as today's alert: asking again would be refused too.
pub fn alert(
    txn: &mut dyn MailTxn,
    alerts: &OwnerAlerts,
    endpoint: &EndpointRecord,
    streak: &mut EndpointStreakRecord,
    cause: OwnerAlert,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(owner) = endpoint.owner_email.as_deref() else {
        return Ok(());
    };
    let today = now_ms.div_euclid(DAY_MS);
    if streak.alerted_day == Some(today) {
        return Ok(());
    }
    streak.alerted_day = Some(today);
    let input = compose(alerts, endpoint, owner, streak, cause, now_ms);
    let request = match request::validate(input, &alerts.mail) {
        Ok(request) => request,
        Err(refusal) => {
            // The configuration was checked at start; an alert the mail
            // path refuses anyway must not fail the attempt's commit.
            tracing::warn!(endpoint = %ids::format(ENDPOINT_ID_PREFIX, endpoint.id),
                           field = refusal.field, reason = %refusal.message,
                           "owner alert not queued");
            return Ok(());
        }
    };
    match mail_ledger::queue(txn, &request, now_ms)? {
        Queued::Suppressed { reason, .. } => {
            tracing::info!(endpoint = %ids::format(ENDPOINT_ID_PREFIX, endpoint.id),
                           reason = reason.as_str(), "owner alert suppressed");
        }
        Queued::Created(_) | Queued::Replayed(_) | Queued::KeyConflict => {}
    }
    Ok(())
}

/// The alert as a `POST /v1/emails` body would give it.
fn compose(
    alerts: &OwnerAlerts,
    endpoint: &EndpointRecord,
    owner: &str,
    streak: &EndpointStreakRecord,
    cause: OwnerAlert,
    now_ms: i64,
) -> EmailInput {
    let endpoint_id = ids::format(ENDPOINT_ID_PREFIX, endpoint.id);
    let short_url: String = endpoint.url.chars().take(SUBJECT_URL_CHARS).collect();
    let (subject, headline, kind) = match cause {
        OwnerAlert::Failing => (
            format!("Webhook endpoint failing: {short_url}"),
            "Herald keeps failing to deliver webhooks to your endpoint.",
            "failing",
        ),
        OwnerAlert::Disabled => (
            format!("Webhook endpoint disabled: {short_url}"),
            "Your webhook endpoint was disabled: it receives no new events until it is enabled again.",
            "disabled",
        ),
    };
    let mut text = format!(
        "{headline}\n\nEndpoint: {endpoint_id}\nURL: {}\n",
        endpoint.url
    );
    if !endpoint.description.is_empty() {
        text.push_str(&format!("Description: {}\n", endpoint.description));
    }
    if let Some(tenant) = &endpoint.tenant {
        text.push_str(&format!("Tenant: {tenant}\n"));
    }
    if let Some(reason) = endpoint
        .disabled_reason
        .as_deref()
        .filter(|_| !endpoint.enabled)
    {
        text.push_str(&format!("Disabled because: {reason}\n"));
    }
    text.push_str(&format!(
        "\nFailed attempts in a row: {}\n",
        streak.failed_attempts
    ));
    if let Some(since) = endpoint.failing_since_ms {
        text.push_str(&format!(
            "Failing since: {}\n",
            clock::format_rfc3339(since)
        ));
    }
    match &streak.last_failure {
        Some(last) => {
            let answer = if last.status_code == 0 {
                "no HTTP answer".to_owned()
            } else {
                format!("HTTP {}", last.status_code)
            };
            text.push_str(&format!(
                "Last attempt: {} ({answer})\n",
                clock::format_rfc3339(last.at_ms)
            ));
            if let Some(error) = &last.error {
                text.push_str(&format!("Error: {error}\n"));
            }
            if !last.response.is_empty() {
                text.push_str(&format!("Response:\n{}\n", last.response));
            }
        }
        None => text.push_str("No failed attempt since the last success.\n"),
    }
    if let (Some(portal), Some(tenant)) = (&alerts.portal, &endpoint.tenant) {
        let (link, expires_at_ms) = portal.link(tenant, now_ms);
        text.push_str(&format!(
            "\nSee its deliveries, fix it and retry them: {link}\n(the link works until {})\n",
            clock::format_rfc3339(expires_at_ms)
        ));
    }
    text.push_str(&format!(
        "\nSent {} by Herald, at most once a day per endpoint.\n",
        clock::format_rfc3339(now_ms)
    ));
    let tags = BTreeMap::from([
        (ALERT_TAG.0.to_owned(), ALERT_TAG.1.to_owned()),
        ("alert".to_owned(), kind.to_owned()),
        ("endpoint_id".to_owned(), endpoint_id),
    ]);
    EmailInput {
        stream: Some(alerts.settings.stream.clone()),
        from: Some(alerts.settings.from.clone()),
        to: Some(Recipients::One(owner.to_owned())),
        reply_to: None,
        subject: Some(subject),
        text: Some(text),
        html: None,
        headers: BTreeMap::new(),
        tags,
        idempotency_key: None,
        tenant: endpoint.tenant.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mail::{validate_mail, MailSection, StreamSection};
    use crate::store::records::FailureSummary;

    const NOW: i64 = 1_764_600_000_000;

    fn alerts(portal: bool) -> OwnerAlerts {
        let mut section = MailSection::default();
        section.streams.insert(
            "alerts".into(),
            StreamSection {
                from_domains: vec!["herald.example".into()],
                ..Default::default()
            },
        );
        OwnerAlerts {
            settings: OwnerAlertSettings {
                stream: "alerts".into(),
                from: "Herald <alerts@herald.example>".into(),
                portal_link_ttl: Duration::from_secs(3600),
            },
            mail: validate_mail(section, std::path::Path::new("/nonexistent")).unwrap(),
            portal: portal.then(|| PortalLinks {
                base_url: "https://hooks.example/".into(),
                ttl: Duration::from_secs(3600),
                mint: Box::new(|tenant, expires| format!("tok-{tenant}-{expires}")),
            }),
        }
    }

    fn endpoint(tenant: Option<&str>) -> EndpointRecord {
        let mut e = super::super::endpoint::new_record(0);
        e.url = "https://receiver.example/hooks".into();
        e.description = "billing sync".into();
        e.tenant = tenant.map(str::to_owned);
        e.owner_email = Some("owner@customer.example".into());
        e.failing_since_ms = Some(NOW - 60_000);
        e
    }

    fn streak() -> EndpointStreakRecord {
        EndpointStreakRecord {
            failed_attempts: 11,
            announced: true,
            last_failure: Some(FailureSummary {
                at_ms: NOW - 1000,
                status_code: 503,
                error: None,
                response: "upstream down".into(),
            }),
            alerted_day: None,
        }
    }

    #[test]
    fn an_alert_names_the_endpoint_what_failed_and_is_tagged() {
        let a = alerts(false);
        let input = compose(
            &a,
            &endpoint(None),
            "owner@customer.example",
            &streak(),
            OwnerAlert::Failing,
            NOW,
        );
        let request = request::validate(input, &a.mail).expect("the mail path accepts it");
        assert_eq!(request.to, vec!["owner@customer.example"]);
        assert_eq!(request.stream, "alerts");
        assert_eq!(
            request.subject,
            "Webhook endpoint failing: https://receiver.example/hooks"
        );
        for part in [
            "https://receiver.example/hooks",
            "billing sync",
            "in a row: 11",
            "HTTP 503",
            "upstream down",
        ] {
            assert!(request.text.contains(part), "{part} in {}", request.text);
        }
        assert!(!request.text.contains("/portal/"), "no tenant, no portal");
        assert!(request
            .tags
            .contains(&("herald".into(), "endpoint_alert".into())));
        assert!(request.tags.contains(&("alert".into(), "failing".into())));
    }

    #[test]
    fn a_tenant_endpoint_alert_links_to_its_portal_until_the_link_expires() {
        let a = alerts(true);
        let mut e = endpoint(Some("acme"));
        e.enabled = false;
        e.disabled_reason = Some("the endpoint answered 410 Gone".into());
        let input = compose(
            &a,
            &e,
            "owner@customer.example",
            &streak(),
            OwnerAlert::Disabled,
            NOW,
        );
        let request = request::validate(input, &a.mail).unwrap();
        let expires = NOW + 3_600_000;
        let link = format!("https://hooks.example/portal/tok-acme-{expires}");
        assert!(request.text.contains(&link), "{}", request.text);
        assert!(request.text.contains(&clock::format_rfc3339(expires)));
        assert!(request.text.contains("410 Gone"));
        assert_eq!(request.tenant.as_deref(), Some("acme"));
        assert!(request.subject.starts_with("Webhook endpoint disabled"));
    }

    #[test]
    fn a_long_url_is_cut_in_the_subject_only() {
        let a = alerts(false);
        let mut e = endpoint(None);
        e.url = format!("https://receiver.example/{}", "x".repeat(2000));
        let input = compose(
            &a,
            &e,
            "owner@customer.example",
            &streak(),
            OwnerAlert::Failing,
            NOW,
        );
        let request = request::validate(input, &a.mail).unwrap();
        assert!(request.subject.chars().count() < 300);
        assert!(request.text.contains(&e.url));
    }
}

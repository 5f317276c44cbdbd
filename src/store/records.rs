//! The records stored in the file, one type per kind, each with the
//! format version it is written in (see `codec` for how versions decode).

use serde::{Deserialize, Serialize};

use super::codec::{decode_body, CodecError, Record};
pub use crate::names::EventSource;

/// An event as stored. Its sequence number is the table key, not a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Received ms, seq and a nonce (`log::event_id`): sorts by time and stays
    /// unique after a restored backup; `evt_…` in the API, `webhook-id` in deliveries.
    pub id: u128,
    /// What subscriptions and filters match: the client's `type`, a tracked
    /// call's event name, or one of Herald's own (`email.sent`…).
    pub event_type: String,
    /// `None`: tied to no tenant, so only endpoints without a tenant receive it.
    pub tenant: Option<String>,
    /// The client's key, unique per tenant: a repeat returns this event.
    pub idempotency_key: Option<String>,
    /// When it happened, as the client said (Unix ms); `received_at_ms` if it did not.
    pub occurred_at_ms: i64,
    /// When it was stored (Unix ms); never earlier than the event before it.
    pub received_at_ms: i64,
    /// The `data` object as JSON text, returned verbatim on reads: the
    /// newest version the event carries.
    pub data: String,
    /// Who made it: an API client, Herald, or a tracking write key. Endpoints
    /// take only the sources they name.
    pub source: EventSource,
    /// The payload version `data` is in (1 unless the client said otherwise).
    pub data_version: u32,
    /// The older versions of the same data the client sent alongside, for
    /// endpoints pinned to one of them: (version, JSON text), ascending, each
    /// below `data_version`. Empty for nearly every event.
    pub older_versions: Vec<(u32, String)>,
}

impl EventRecord {
    /// The data in `version`, if the event carries it.
    pub fn data_in(&self, version: u32) -> Option<&str> {
        if version == self.data_version {
            return Some(&self.data);
        }
        self.older_versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, data)| data.as_str())
    }

    /// Every version the event carries, ascending.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.older_versions
            .iter()
            .map(|(v, _)| *v)
            .chain(std::iter::once(self.data_version))
    }
}

impl Record for EventRecord {
    const NAME: &'static str = "event";
    /// 2: events carry their `source`. 3: and their data in several versions.
    const VERSION: u8 = 3;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => Ok(decode_body::<v1::EventRecord>(Self::NAME, body)?.into()),
            2 => Ok(decode_body::<v2::EventRecord>(Self::NAME, body)?.into()),
            _ => Err(CodecError::UnknownVersion {
                record: Self::NAME,
                version,
            }),
        }
    }
}

/// A webhook endpoint as stored. Its id is the table key as well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// A UUIDv7; `ep_…` in the API.
    pub id: u128,
    /// Where attempts are POSTed; checked against the SSRF rules at every attempt.
    pub url: String,
    /// `None` receives every tenant's events; otherwise only that tenant's.
    pub tenant: Option<String>,
    /// Type names, tracked event names, `prefix.*` or `*`; empty subscribes to all.
    pub event_types: Vec<String>,
    /// Free text for operators; Herald does nothing with it.
    pub description: String,
    /// Extra request headers, names lowercased; never one Herald sets itself.
    pub headers: Vec<(String, String)>,
    /// Attempts a second at most, so a small receiver is not flooded; `None`: no limit.
    pub rate_limit_per_sec: Option<u32>,
    /// Per-attempt limit in seconds (1–30) instead of `webhooks.timeout`.
    pub timeout_secs: Option<u32>,
    /// The current signing secret (`whsec_…`); every attempt is signed with it.
    pub secret: String,
    /// Retired secrets with their expiry (Unix ms), newest first, at most 4:
    /// they still sign, so receivers can switch over without losing deliveries.
    pub old_secrets: Vec<(String, i64)>,
    /// A disabled endpoint gets no new deliveries and its pending ones wait.
    pub enabled: bool,
    /// Why it was disabled (by the API, 410 Gone, failing too long); cleared on enable.
    pub disabled_reason: Option<String>,
    /// Shape of the JSON body sent; 1 is the only one so far.
    pub payload_version: u8,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// Last change by the API or by the dispatcher (failing streak, auto-disable).
    pub updated_at_ms: i64,
    /// Start of the current run of failures, cleared by any success; drives
    /// auto-disable.
    pub failing_since_ms: Option<i64>,
    /// The sources whose events it takes; never empty, no repeats.
    pub sources: Vec<EventSource>,
    /// Who is emailed when it keeps failing or is disabled (normalised);
    /// `None`: nobody.
    pub owner_email: Option<String>,
    /// (event type, payload version) it is pinned to, sorted by type: its
    /// deliveries of that type carry that version of the data. A type not
    /// listed gets the newest version the event carries.
    pub version_pins: Vec<(String, u32)>,
}

impl EndpointRecord {
    /// What it subscribes to, for matching events.
    pub fn subscription(&self) -> crate::names::Subscription<'_> {
        crate::names::Subscription {
            patterns: &self.event_types,
            sources: &self.sources,
            tenant: self.tenant.as_deref(),
        }
    }
}

impl Record for EndpointRecord {
    const NAME: &'static str = "endpoint";
    /// 2: endpoints name the `sources` they take. 3: an `owner_email` and
    /// version pins.
    const VERSION: u8 = 3;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => Ok(decode_body::<v1::EndpointRecord>(Self::NAME, body)?.into()),
            2 => Ok(decode_body::<v2::EndpointRecord>(Self::NAME, body)?.into()),
            _ => Err(CodecError::UnknownVersion {
                record: Self::NAME,
                version,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Waiting for the attempt due at `next_attempt_ms`.
    Pending,
    /// A 2xx answer arrived; nothing more is attempted.
    Succeeded,
    /// No more scheduled attempts (schedule exhausted, 410 Gone or endpoint
    /// deleted): a dead letter until retried or recovered.
    Failed,
}

/// Why a webhook attempt got no usable answer: what the attempt log shows
/// and the retry policy tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// Never sent: the destination is not a permitted address.
    Refused,
    /// Never sent: the request could not be built.
    InvalidRequest,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection could be made.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// No answer within the timeout.
    Timeout,
    /// The connection broke during the exchange.
    Connection,
    /// An answer arrived but its body broke off or came too slowly.
    Body,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::InvalidRequest => "invalid_request",
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Connection => "connection",
            FailureKind::Body => "body",
        }
    }
}

/// One attempt at a delivery, kept for the delivery's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When the attempt started (Unix ms).
    pub at_ms: i64,
    /// 0 when no HTTP answer arrived.
    pub status_code: u16,
    /// What went wrong, in words, when something did.
    pub error: Option<String>,
    /// What went wrong, as a kind; `None` for a plain HTTP answer and for
    /// attempts recorded before kinds were (version 1 deliveries).
    pub failure: Option<FailureKind>,
    /// From the start of the attempt to the end of its answer.
    pub latency_ms: u32,
    /// At most 4 KiB of the response body, for debugging receivers.
    pub response: String,
    /// Made by `POST /v1/deliveries/{id}/retry`, outside the schedule.
    pub manual: bool,
}

/// One event on its way to one endpoint. Its id is the table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Where it goes.
    pub endpoint_id: u128,
    /// The event's place in the log, to find its deliveries by event.
    pub event_seq: u64,
    /// The event's id: the `webhook-id` of every attempt.
    pub event_id: u128,
    /// Copied from the event so listings need not read it.
    pub event_type: String,
    /// Where it stands; `Failed` ones are the dead letters.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// When the next scheduled attempt is due; `None` once settled.
    pub next_attempt_ms: Option<i64>,
    /// When fan-out or a replay made it (Unix ms); `recover` selects by it.
    pub created_at_ms: i64,
    /// Attempts before this index do not count against the retry schedule:
    /// a recovered delivery starts the schedule afresh.
    pub schedule_from: u32,
}

impl Record for DeliveryRecord {
    const NAME: &'static str = "delivery";
    /// 2: attempts carry a `failure` kind.
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => Ok(decode_body::<v1::DeliveryRecord>(Self::NAME, body)?.into()),
            _ => Err(CodecError::UnknownVersion {
                record: Self::NAME,
                version,
            }),
        }
    }
}

/// The shapes version 1 files hold.
pub(super) mod v1 {
    use serde::{Deserialize, Serialize};

    use super::SuppressionReason;

    /// A suppression entry before details were kept.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SuppressionRecord {
        pub reason: SuppressionReason,
        pub created_at_ms: i64,
        pub email_id: Option<u64>,
    }

    impl From<SuppressionRecord> for super::SuppressionRecord {
        fn from(old: SuppressionRecord) -> Self {
            super::SuppressionRecord {
                reason: old.reason,
                created_at_ms: old.created_at_ms,
                email_id: old.email_id,
                detail: String::new(),
            }
        }
    }

    use super::{DeliveryStatus, EmailStatus, EventSource, MailAttemptRecord};

    /// An event before sources were recorded.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EventRecord {
        /// As the current record's `id`.
        pub id: u128,
        /// As the current record's `event_type`.
        pub event_type: String,
        /// As the current record's `tenant`.
        pub tenant: Option<String>,
        /// As the current record's `idempotency_key`.
        pub idempotency_key: Option<String>,
        /// As the current record's `occurred_at_ms`.
        pub occurred_at_ms: i64,
        /// As the current record's `received_at_ms`.
        pub received_at_ms: i64,
        /// As the current record's `data`.
        pub data: String,
    }

    impl From<EventRecord> for super::EventRecord {
        /// The type tells Herald's own events from API events. Tracked calls
        /// cannot be told apart here: the schema migration to version 3
        /// rewrites them with their source.
        fn from(old: EventRecord) -> Self {
            let source = if crate::names::is_herald_event_type(&old.event_type) {
                EventSource::Herald
            } else {
                EventSource::Api
            };
            super::EventRecord {
                id: old.id,
                event_type: old.event_type,
                tenant: old.tenant,
                idempotency_key: old.idempotency_key,
                occurred_at_ms: old.occurred_at_ms,
                received_at_ms: old.received_at_ms,
                data: old.data,
                source,
                data_version: 1,
                older_versions: Vec::new(),
            }
        }
    }

    /// An endpoint before it named its sources.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EndpointRecord {
        /// As the current record's `id`.
        pub id: u128,
        /// As the current record's `url`.
        pub url: String,
        /// As the current record's `tenant`.
        pub tenant: Option<String>,
        /// As the current record's `event_types`.
        pub event_types: Vec<String>,
        /// As the current record's `description`.
        pub description: String,
        /// As the current record's `headers`.
        pub headers: Vec<(String, String)>,
        /// As the current record's `rate_limit_per_sec`.
        pub rate_limit_per_sec: Option<u32>,
        /// As the current record's `timeout_secs`.
        pub timeout_secs: Option<u32>,
        /// As the current record's `secret`.
        pub secret: String,
        /// As the current record's `old_secrets`.
        pub old_secrets: Vec<(String, i64)>,
        /// As the current record's `enabled`.
        pub enabled: bool,
        /// As the current record's `disabled_reason`.
        pub disabled_reason: Option<String>,
        /// As the current record's `payload_version`.
        pub payload_version: u8,
        /// As the current record's `created_at_ms`.
        pub created_at_ms: i64,
        /// As the current record's `updated_at_ms`.
        pub updated_at_ms: i64,
        /// As the current record's `failing_since_ms`.
        pub failing_since_ms: Option<i64>,
    }

    impl From<EndpointRecord> for super::EndpointRecord {
        /// The default sources: what such an endpoint was meant to receive.
        /// Tracked calls reached it too, which is what sources now prevent.
        fn from(old: EndpointRecord) -> Self {
            super::EndpointRecord {
                id: old.id,
                url: old.url,
                tenant: old.tenant,
                event_types: old.event_types,
                description: old.description,
                headers: old.headers,
                rate_limit_per_sec: old.rate_limit_per_sec,
                timeout_secs: old.timeout_secs,
                secret: old.secret,
                old_secrets: old.old_secrets,
                enabled: old.enabled,
                disabled_reason: old.disabled_reason,
                payload_version: old.payload_version,
                created_at_ms: old.created_at_ms,
                updated_at_ms: old.updated_at_ms,
                failing_since_ms: old.failing_since_ms,
                sources: EventSource::DEFAULT_FOR_ENDPOINTS.to_vec(),
                owner_email: None,
                version_pins: Vec::new(),
            }
        }
    }

    /// An attempt before failure kinds were recorded.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AttemptRecord {
        /// As the current record's `at_ms`.
        pub at_ms: i64,
        /// As the current record's `status_code`.
        pub status_code: u16,
        /// As the current record's `error`.
        pub error: Option<String>,
        /// As the current record's `latency_ms`.
        pub latency_ms: u32,
        /// As the current record's `response`.
        pub response: String,
        /// As the current record's `manual`.
        pub manual: bool,
    }

    /// A delivery whose attempts have no `failure` kind.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DeliveryRecord {
        /// As the current record's `endpoint_id`.
        pub endpoint_id: u128,
        /// As the current record's `event_seq`.
        pub event_seq: u64,
        /// As the current record's `event_id`.
        pub event_id: u128,
        /// As the current record's `event_type`.
        pub event_type: String,
        /// As the current record's `status`.
        pub status: DeliveryStatus,
        /// As the current record's `attempts`, in the old shape.
        pub attempts: Vec<AttemptRecord>,
        /// As the current record's `next_attempt_ms`.
        pub next_attempt_ms: Option<i64>,
        /// As the current record's `created_at_ms`.
        pub created_at_ms: i64,
        /// As the current record's `schedule_from`.
        pub schedule_from: u32,
    }

    impl From<DeliveryRecord> for super::DeliveryRecord {
        fn from(old: DeliveryRecord) -> Self {
            super::DeliveryRecord {
                endpoint_id: old.endpoint_id,
                event_seq: old.event_seq,
                event_id: old.event_id,
                event_type: old.event_type,
                status: old.status,
                attempts: old
                    .attempts
                    .into_iter()
                    .map(|a| super::AttemptRecord {
                        at_ms: a.at_ms,
                        status_code: a.status_code,
                        error: a.error,
                        failure: None,
                        latency_ms: a.latency_ms,
                        response: a.response,
                        manual: a.manual,
                    })
                    .collect(),
                next_attempt_ms: old.next_attempt_ms,
                created_at_ms: old.created_at_ms,
                schedule_from: old.schedule_from,
            }
        }
    }

    /// A message from before tenants.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EmailRecord {
        /// As the current record's `stream`.
        pub stream: String,
        /// As the current record's `from`.
        pub from: String,
        /// As the current record's `to`.
        pub to: String,
        /// As the current record's `reply_to`.
        pub reply_to: Option<String>,
        /// As the current record's `subject`.
        pub subject: String,
        /// As the current record's `text`.
        pub text: String,
        /// As the current record's `html`.
        pub html: Option<String>,
        /// As the current record's `headers`.
        pub headers: Vec<(String, String)>,
        /// As the current record's `tags`.
        pub tags: Vec<(String, String)>,
        /// As the current record's `message_id`.
        pub message_id: String,
        /// As the current record's `created_at_ms`.
        pub created_at_ms: i64,
        /// As the current record's `status`.
        pub status: EmailStatus,
        /// As the current record's `attempts`.
        pub attempts: Vec<MailAttemptRecord>,
        /// As the current record's `next_attempt_ms`.
        pub next_attempt_ms: Option<i64>,
        /// As the current record's `smtp_response`.
        pub smtp_response: Option<String>,
        /// As the current record's `flagged`.
        pub flagged: bool,
    }

    impl From<EmailRecord> for super::EmailRecord {
        fn from(old: EmailRecord) -> Self {
            super::EmailRecord {
                stream: old.stream,
                tenant: None,
                from: old.from,
                to: old.to,
                reply_to: old.reply_to,
                subject: old.subject,
                text: old.text,
                html: old.html,
                headers: old.headers,
                tags: old.tags,
                message_id: old.message_id,
                created_at_ms: old.created_at_ms,
                status: old.status,
                attempts: old.attempts,
                next_attempt_ms: old.next_attempt_ms,
                smtp_response: old.smtp_response,
                flagged: old.flagged,
            }
        }
    }
}

/// The shapes version 2 files hold.
pub(super) mod v2 {
    use serde::{Deserialize, Serialize};

    use super::EventSource;

    /// An event before payload versions: its data is version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EventRecord {
        /// As the current record's `id`.
        pub id: u128,
        /// As the current record's `event_type`.
        pub event_type: String,
        /// As the current record's `tenant`.
        pub tenant: Option<String>,
        /// As the current record's `idempotency_key`.
        pub idempotency_key: Option<String>,
        /// As the current record's `occurred_at_ms`.
        pub occurred_at_ms: i64,
        /// As the current record's `received_at_ms`.
        pub received_at_ms: i64,
        /// As the current record's `data`.
        pub data: String,
        /// As the current record's `source`.
        pub source: EventSource,
    }

    impl From<EventRecord> for super::EventRecord {
        fn from(old: EventRecord) -> Self {
            super::EventRecord {
                id: old.id,
                event_type: old.event_type,
                tenant: old.tenant,
                idempotency_key: old.idempotency_key,
                occurred_at_ms: old.occurred_at_ms,
                received_at_ms: old.received_at_ms,
                data: old.data,
                source: old.source,
                data_version: 1,
                older_versions: Vec::new(),
            }
        }
    }

    /// An endpoint before it had an owner to alert or version pins.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EndpointRecord {
        /// As the current record's `id`.
        pub id: u128,
        /// As the current record's `url`.
        pub url: String,
        /// As the current record's `tenant`.
        pub tenant: Option<String>,
        /// As the current record's `event_types`.
        pub event_types: Vec<String>,
        /// As the current record's `description`.
        pub description: String,
        /// As the current record's `headers`.
        pub headers: Vec<(String, String)>,
        /// As the current record's `rate_limit_per_sec`.
        pub rate_limit_per_sec: Option<u32>,
        /// As the current record's `timeout_secs`.
        pub timeout_secs: Option<u32>,
        /// As the current record's `secret`.
        pub secret: String,
        /// As the current record's `old_secrets`.
        pub old_secrets: Vec<(String, i64)>,
        /// As the current record's `enabled`.
        pub enabled: bool,
        /// As the current record's `disabled_reason`.
        pub disabled_reason: Option<String>,
        /// As the current record's `payload_version`.
        pub payload_version: u8,
        /// As the current record's `created_at_ms`.
        pub created_at_ms: i64,
        /// As the current record's `updated_at_ms`.
        pub updated_at_ms: i64,
        /// As the current record's `failing_since_ms`.
        pub failing_since_ms: Option<i64>,
        /// As the current record's `sources`.
        pub sources: Vec<EventSource>,
    }

    impl From<EndpointRecord> for super::EndpointRecord {
        /// Nobody to alert (an owner is named through the API), and
        /// unpinned: every delivery carries the newest version, which is
        /// what such an endpoint received before.
        fn from(old: EndpointRecord) -> Self {
            super::EndpointRecord {
                id: old.id,
                url: old.url,
                tenant: old.tenant,
                event_types: old.event_types,
                description: old.description,
                headers: old.headers,
                rate_limit_per_sec: old.rate_limit_per_sec,
                timeout_secs: old.timeout_secs,
                secret: old.secret,
                old_secrets: old.old_secrets,
                enabled: old.enabled,
                disabled_reason: old.disabled_reason,
                payload_version: old.payload_version,
                created_at_ms: old.created_at_ms,
                updated_at_ms: old.updated_at_ms,
                failing_since_ms: old.failing_since_ms,
                sources: old.sources,
                owner_email: None,
                version_pins: Vec::new(),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailStatus {
    /// Waiting for its first attempt.
    Queued,
    /// A temporary failure; another attempt is scheduled.
    Deferred,
    /// The relay accepted it, or it was written to the outbox.
    Sent,
    /// Given up without a hard bounce: expired, refused, soft-bounce limit
    /// reached, or the recipient was suppressed after queueing.
    Failed,
    /// The recipient's mailbox does not exist: the address is suppressed.
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAttemptRecord {
    /// When the attempt started (Unix ms).
    pub at_ms: i64,
    /// The SMTP reply code (250 for the outbox); 0 when no reply came: relay
    /// unreachable or silent, or a local failure such as signing.
    pub code: u16,
    /// The reply's text (at most 1000 characters), or what went wrong locally.
    pub text: String,
    /// From composing the message to the relay's reply.
    pub latency_ms: u32,
}

/// One message to one recipient. Its id is the table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRecord {
    /// The stream it was queued on; if the config drops that stream it stays queued.
    pub stream: String,
    /// Whose message it is: only keys of this tenant (or unscoped ones) see
    /// it, its `email.*` events carry it, and its sends also check this
    /// tenant's suppression list. `None` for messages queued before tenants
    /// (version 1) and by unscoped keys without one.
    pub tenant: Option<String>,
    /// `Name <address>` or the bare address, address normalised; every attempt
    /// composes the message anew from these fields.
    pub from: String,
    /// Normalised recipient address.
    pub to: String,
    /// As `from`; `None`: no Reply-To header.
    pub reply_to: Option<String>,
    /// The Subject header, as the request gave it.
    pub subject: String,
    /// The plain-text part; always present, as HTML-only mail is penalised.
    pub text: String,
    /// The HTML part; `None` sends text only.
    pub html: Option<String>,
    /// The request's extra headers; never one Herald writes itself.
    pub headers: Vec<(String, String)>,
    /// The caller's labels, shown in the API and `email.queued`; not in the message.
    pub tags: Vec<(String, String)>,
    /// The `Message-ID` header, fixed at queueing so every attempt (and a
    /// DKIM signature over it) names the same message.
    pub message_id: String,
    /// When it was queued (Unix ms): the Date header, and where
    /// `give_up_after` counts from.
    pub created_at_ms: i64,
    /// Where it stands; only `Queued` and `Deferred` are still attempted.
    pub status: EmailStatus,
    /// Every attempt, oldest first; their number picks the retry wait.
    pub attempts: Vec<MailAttemptRecord>,
    /// When the next attempt is due (Unix ms); `None` once it is settled.
    pub next_attempt_ms: Option<i64>,
    /// The latest reply as `CODE text`, whatever it said. An accepting one is
    /// where ESPs put their own message id.
    pub smtp_response: Option<String>,
    /// A sender-side refusal (5.7.x) that an operator should look at.
    pub flagged: bool,
}

impl Record for EmailRecord {
    const NAME: &'static str = "email";
    /// 2: a message carries its tenant.
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => Ok(decode_body::<v1::EmailRecord>(Self::NAME, body)?.into()),
            _ => Err(CodecError::UnknownVersion {
                record: Self::NAME,
                version,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuppressionReason {
    /// The relay said the mailbox does not exist or is disabled.
    HardBounce,
    /// The recipient reported mail as spam; set through the API.
    Complaint,
    /// The recipient used an unsubscribe link (for that link's stream).
    Unsubscribe,
    /// `mail.soft_bounce_limit` temporary failures in a row.
    SoftBounceLimit,
    /// Added through the API without a reason.
    Manual,
    /// An ESP reported the address on its own suppression list; the
    /// entry's `detail` keeps the ESP's reason.
    EspSuppressed,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 6] = [
        SuppressionReason::HardBounce,
        SuppressionReason::Complaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::SoftBounceLimit,
        SuppressionReason::Manual,
        SuppressionReason::EspSuppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::SoftBounceLimit => "soft_bounce_limit",
            SuppressionReason::Manual => "manual",
            SuppressionReason::EspSuppressed => "esp_suppressed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Why an address (for one stream, or all) must not be sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionRecord {
    /// Shown in the API and in the refusal of a request to the address.
    pub reason: SuppressionReason,
    /// When it was added or its reason last changed (Unix ms).
    pub created_at_ms: i64,
    /// The message whose outcome caused it, when one did.
    pub email_id: Option<u64>,
    /// Where it came from beyond the reason: the ESP and its own words
    /// (`sendgrid: Bounced Address`). Empty for entries Herald decided.
    pub detail: String,
}

impl Record for SuppressionRecord {
    const NAME: &'static str = "suppression";
    /// 2: an entry keeps a detail (an ESP's own reason).
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => Ok(decode_body::<v1::SuppressionRecord>(Self::NAME, body)?.into()),
            _ => Err(CodecError::UnknownVersion {
                record: Self::NAME,
                version,
            }),
        }
    }
}

/// One ESP feedback event as received. Its id (`fb_…`) is the table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// `ses`, `sendgrid`, `postmark`, `mailgun` or `resend`.
    pub provider: String,
    /// The provider's id of the event: replays are recognised by it.
    pub event_id: String,
    /// The normalised kind (`hard_bounce`, `complaint`…).
    pub kind: String,
    /// The recipient it is about, normalised when it parses as an address.
    pub address: String,
    /// Our message it matched; `None`: unmatched, applied to the address only.
    pub email_id: Option<u64>,
    /// The matched message's stream and tenant.
    pub stream: Option<String>,
    pub tenant: Option<String>,
    /// When the provider says it happened (Unix ms).
    pub occurred_at_ms: Option<i64>,
    pub received_at_ms: i64,
    /// The provider's own words: bounce type, diagnostic, reason.
    pub detail: String,
    /// The provider's JSON for this event, for the message's timeline.
    pub raw: String,
}

impl Record for FeedbackRecord {
    const NAME: &'static str = "feedback";
    const VERSION: u8 = 1;
}

/// An address's recent soft bounces, as the UTC days they happened on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftBounceRecord {
    /// Days since the Unix epoch, ascending, each once; only those inside
    /// `mail.soft_bounce_window` are kept.
    pub days: Vec<i64>,
}

impl Record for SoftBounceRecord {
    const NAME: &'static str = "soft bounces";
    const VERSION: u8 = 1;
}

/// What Herald keeps about a mail stream between messages: whether it is
/// paused, its warning, and its warm-up progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStateRecord {
    /// Held: its mail waits in the queue until the stream is resumed.
    pub paused: bool,
    /// Why it was paused (a rate over its limit, or an operator).
    pub pause_reason: Option<String>,
    pub paused_at_ms: Option<i64>,
    /// A rate over its warning level, as last judged.
    pub warning: Option<String>,
    /// Messages sent since an operator last resumed it: until the guard's
    /// `min_sends` more have gone, the windows still hold what caused the
    /// pause, so they may warn but not pause it again. `None`: never resumed.
    pub sent_since_resume: Option<u32>,
    /// Warm-up: the index into the ramp of caps for `day`.
    pub warmup_step: u32,
    /// The UTC day (since the epoch) `sent_on_day` and
    /// `complaints_on_day` are about; 0 before the first send. How many
    /// went that day is in `stream_tally`: the record is written when the
    /// day changes, not at every send.
    pub day: i64,
    /// Whether the stream sent anything on `day`.
    pub sent_on_day: bool,
    pub complaints_on_day: u32,
}

impl Record for StreamStateRecord {
    const NAME: &'static str = "stream state";
    const VERSION: u8 = 1;
}

/// An endpoint's current run of failed attempts, across its deliveries,
/// and when its owner was last alerted. The endpoint id is the table key;
/// kept apart from the endpoint record, which every failure would
/// otherwise rewrite (and every rewrite reloads the dispatcher's gates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStreakRecord {
    /// Attempts failed in a row since the last success; 0 after one.
    pub failed_attempts: u32,
    /// `delivery.failing` was recorded for this run, so it is not again.
    pub announced: bool,
    /// The run's latest failure, for the owner's alert.
    pub last_failure: Option<FailureSummary>,
    /// The UTC day (since the epoch) of the owner's last alert; kept across
    /// runs, so an owner hears at most once a day per endpoint.
    pub alerted_day: Option<i64>,
}

/// What one failed attempt saw, in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureSummary {
    /// When the attempt started (Unix ms).
    pub at_ms: i64,
    /// 0 when no HTTP answer arrived.
    pub status_code: u16,
    /// What went wrong, in words, when the attempt says.
    pub error: Option<String>,
    /// The start of the response body (at most 1,000 characters).
    pub response: String,
}

impl Record for EndpointStreakRecord {
    const NAME: &'static str = "endpoint streak";
    const VERSION: u8 = 1;
}

/// What identify calls said about one user. The userId is the table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The merged traits object as JSON text (later calls win per key).
    pub traits: String,
    /// Anonymous ids (and aliased earlier ids) linked to this user.
    pub linked_ids: Vec<String>,
    /// Receive time of the first call that made the profile (Unix ms).
    pub created_at_ms: i64,
    /// Receive time of the last call that touched it (Unix ms).
    pub updated_at_ms: i64,
}

impl Record for ProfileRecord {
    const NAME: &'static str = "profile";
    const VERSION: u8 = 1;
}

/// An API key created through the API. Its id is the table key; the key
/// itself is shown once, at creation, and never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key: what a presented key is looked up by.
    pub key_hash: [u8; 32],
    /// `admin`, `write` or `read`, as `Role::as_str` writes it.
    pub role: String,
    /// `Some`: the key sees and changes only this tenant's objects.
    pub tenant: Option<String>,
    /// Free text for operators (who holds the key, what for).
    pub description: String,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
}

impl Record for ApiKeyRecord {
    const NAME: &'static str = "api key";
    const VERSION: u8 = 1;
}

/// One payload version of a catalogued event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeVersion {
    /// 1 and up; events name it in `data_versions`.
    pub version: u32,
    /// A JSON Schema as JSON text, checked when stored; events of the type
    /// carrying this version are validated against it. `None`: not checked.
    pub schema: Option<String>,
    /// An example `data` object as JSON text, valid against `schema`: what
    /// test sends carry and what the catalog shows customers.
    pub sample: String,
}

/// An event type in the catalog, shared by every tenant. Its name is the
/// table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTypeRecord {
    /// Free text for the people who receive the type.
    pub description: String,
    /// Ascending by version, at least one, no repeats.
    pub versions: Vec<EventTypeVersion>,
    /// Shown in the catalog so receivers move off it; events of the type
    /// are still taken.
    pub deprecated: bool,
    /// When the type was first stored (Unix ms).
    pub created_at_ms: i64,
    /// When it was last replaced (Unix ms).
    pub updated_at_ms: i64,
}

impl Record for EventTypeRecord {
    const NAME: &'static str = "event type";
    const VERSION: u8 = 1;
}

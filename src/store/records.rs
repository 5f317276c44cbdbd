//! The records stored in the file, one type per kind, each with the
//! format version it is written in (see `codec` for how versions decode).

use serde::{Deserialize, Serialize};

use super::codec::{decode_body, CodecError, Record};

/// An event as stored. Its sequence number is the table key, not a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: u128,
    pub event_type: String,
    pub tenant: Option<String>,
    pub idempotency_key: Option<String>,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    /// The `data` object as JSON text, returned verbatim on reads.
    pub data: String,
}

impl Record for EventRecord {
    const NAME: &'static str = "event";
    const VERSION: u8 = 1;
}

/// A webhook endpoint as stored. Its id is the table key as well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: u128,
    pub url: String,
    pub tenant: Option<String>,
    pub event_types: Vec<String>,
    pub description: String,
    pub headers: Vec<(String, String)>,
    pub rate_limit_per_sec: Option<u32>,
    pub timeout_secs: Option<u32>,
    /// The signing secret (`whsec_…`) first, then retired secrets that still
    /// sign until their expiry (Unix ms).
    pub secret: String,
    pub old_secrets: Vec<(String, i64)>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub payload_version: u8,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Start of the current run of failures, cleared by any success; drives
    /// auto-disable.
    pub failing_since_ms: Option<i64>,
}

impl Record for EndpointRecord {
    const NAME: &'static str = "endpoint";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    /// The schedule is exhausted: a dead letter until retried or recovered.
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
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// When the next scheduled attempt is due; `None` once settled.
    pub next_attempt_ms: Option<i64>,
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

    use super::DeliveryStatus;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AttemptRecord {
        pub at_ms: i64,
        pub status_code: u16,
        pub error: Option<String>,
        pub latency_ms: u32,
        pub response: String,
        pub manual: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DeliveryRecord {
        pub endpoint_id: u128,
        pub event_seq: u64,
        pub event_id: u128,
        pub event_type: String,
        pub status: DeliveryStatus,
        pub attempts: Vec<AttemptRecord>,
        pub next_attempt_ms: Option<i64>,
        pub created_at_ms: i64,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailStatus {
    Queued,
    /// A temporary failure; another attempt is scheduled.
    Deferred,
    Sent,
    Failed,
    /// The recipient's mailbox does not exist: the address is suppressed.
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAttemptRecord {
    pub at_ms: i64,
    /// The SMTP reply code; 0 when the relay could not be reached.
    pub code: u16,
    pub text: String,
    pub latency_ms: u32,
}

/// One message to one recipient. Its id is the table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRecord {
    pub stream: String,
    pub from: String,
    /// Normalised recipient address.
    pub to: String,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// The `Message-ID` header, fixed at queueing so every attempt (and a
    /// DKIM signature over it) names the same message.
    pub message_id: String,
    pub created_at_ms: i64,
    pub status: EmailStatus,
    pub attempts: Vec<MailAttemptRecord>,
    pub next_attempt_ms: Option<i64>,
    /// The relay's accepting reply: ESPs put their own message id there.
    pub smtp_response: Option<String>,
    /// A sender-side refusal (5.7.x) that an operator should look at.
    pub flagged: bool,
}

impl Record for EmailRecord {
    const NAME: &'static str = "email";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuppressionReason {
    HardBounce,
    Complaint,
    Unsubscribe,
    SoftBounceLimit,
    Manual,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::HardBounce,
        SuppressionReason::Complaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::SoftBounceLimit,
        SuppressionReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::SoftBounceLimit => "soft_bounce_limit",
            SuppressionReason::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Why an address (for one stream, or all) must not be sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionRecord {
    pub reason: SuppressionReason,
    pub created_at_ms: i64,
    /// The message whose outcome caused it, when one did.
    pub email_id: Option<u64>,
}

impl Record for SuppressionRecord {
    const NAME: &'static str = "suppression";
    const VERSION: u8 = 1;
}

/// What identify calls said about one user. The userId is the table key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The merged traits object as JSON text (later calls win per key).
    pub traits: String,
    /// Anonymous ids (and aliased earlier ids) linked to this user.
    pub linked_ids: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Record for ProfileRecord {
    const NAME: &'static str = "profile";
    const VERSION: u8 = 1;
}

//! ESP feedback: each provider's webhook checked for authenticity on its
//! raw bytes and normalised into [`FeedbackEvent`]s, which the mail ledger
//! matches to our messages and turns into suppressions and `email.*` events.

mod common;
mod keys;
pub mod mailgun;
pub mod postmark;
pub mod resend;
pub mod sendgrid;
pub mod ses;
pub mod settings;
pub mod sns_fetch;
#[cfg(test)]
pub(crate) mod test_support;

pub use common::MAX_EVENTS as MAX_EVENTS_PER_REQUEST;

use serde::{Deserialize, Serialize};

/// The providers whose webhooks Herald reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Provider {
    /// Amazon SES, through an SNS topic.
    Ses,
    Sendgrid,
    Postmark,
    Mailgun,
    Resend,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Ses,
        Provider::Sendgrid,
        Provider::Postmark,
        Provider::Mailgun,
        Provider::Resend,
    ];

    /// The name in routes (`/feedback/NAME`), config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ses => "ses",
            Provider::Sendgrid => "sendgrid",
            Provider::Postmark => "postmark",
            Provider::Mailgun => "mailgun",
            Provider::Resend => "resend",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// What a provider event means for the message and its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedbackKind {
    /// The receiving server accepted the message.
    Delivered,
    /// The provider is still trying (its own retries).
    Deferred,
    /// A temporary failure that counts towards the soft-bounce rule.
    SoftBounce,
    /// The mailbox does not exist or is disabled.
    HardBounce,
    /// The recipient reported the message as spam.
    Complaint,
    Opened,
    Clicked,
    /// The provider refused to send because the address is on its own list.
    EspSuppressed,
    /// Refused for a sender-side reason (reputation, content, policy): the
    /// address is fine, an operator should look.
    PolicyBlock,
}

impl FeedbackKind {
    pub const ALL: [FeedbackKind; 9] = [
        FeedbackKind::Delivered,
        FeedbackKind::Deferred,
        FeedbackKind::SoftBounce,
        FeedbackKind::HardBounce,
        FeedbackKind::Complaint,
        FeedbackKind::Opened,
        FeedbackKind::Clicked,
        FeedbackKind::EspSuppressed,
        FeedbackKind::PolicyBlock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Delivered => "delivered",
            FeedbackKind::Deferred => "deferred",
            FeedbackKind::SoftBounce => "soft_bounce",
            FeedbackKind::HardBounce => "hard_bounce",
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::Opened => "opened",
            FeedbackKind::Clicked => "clicked",
            FeedbackKind::EspSuppressed => "esp_suppressed",
            FeedbackKind::PolicyBlock => "policy_block",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One provider event about one recipient, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackEvent {
    pub provider: Provider,
    /// The provider's id for this event (SNS `MessageId` plus the
    /// recipient, `sg_event_id`, Postmark `ID`, Mailgun `event-data.id`,
    /// `svix-id` plus the recipient): a replay is recognised by it.
    pub event_id: String,
    pub kind: FeedbackKind,
    /// The recipient the event is about, as the provider wrote it.
    pub address: String,
    /// Our id (`msg_…`) as the provider echoed it from the metadata header
    /// Herald sent, if it did.
    pub herald_id: Option<String>,
    /// The `Message-ID` header of the message as the provider echoed it.
    pub message_id_header: Option<String>,
    /// The provider's own message id, as its 250 reply gave it.
    pub provider_message_id: Option<String>,
    /// When the provider says it happened (Unix ms).
    pub occurred_at_ms: Option<i64>,
    /// The provider's words: bounce type and subtype, diagnostic, reason.
    pub detail: String,
    /// The provider's JSON for this one event, kept for the timeline.
    pub raw: String,
}

/// What one authentic request carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: Vec<FeedbackEvent>,
    /// A single-use value the signature covers (Mailgun's `token`): a
    /// second request with it is a replay.
    pub replay_token: Option<String>,
    /// A test, ping or notification type Herald has no use for: answered
    /// `2xx` and otherwise ignored. Says what it was.
    pub ignored: Option<String>,
}

/// Why a request was refused. Nothing is stored for a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackError {
    /// No, a wrong or a stale signature (or credentials): `401`.
    Unauthenticated(String),
    /// Authentic (or not yet checkable) but unreadable: `400`.
    Malformed(String),
    /// Not checkable now (the SNS signing certificate could not be
    /// fetched): `503`, which the provider retries, where a 4xx would make
    /// it drop the event for good.
    Unavailable(String),
}

impl std::fmt::Display for FeedbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedbackError::Unauthenticated(m)
            | FeedbackError::Malformed(m)
            | FeedbackError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// A request as the provider sent it: authenticity is checked on these
/// exact bytes, never on a re-serialisation.
pub struct Inbound<'a> {
    pub headers: &'a hyper::HeaderMap,
    pub body: &'a [u8],
    /// The receiving time (Unix ms), for timestamp freshness.
    pub now_ms: i64,
}

/// The most of an event's raw JSON kept for its timeline. A notification
/// naming many recipients is one event per recipient: each keeps at most
/// this much of the shared text, not a copy of the whole body.
pub const MAX_RAW_BYTES: usize = 16 * 1024;

/// `text` cut to [`MAX_RAW_BYTES`] at a character boundary.
pub fn raw_excerpt(text: &str) -> String {
    let mut end = text.len().min(MAX_RAW_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// How far a signed timestamp may be from our clock, either way.
pub const TIMESTAMP_TOLERANCE_MS: i64 = 5 * 60 * 1000;

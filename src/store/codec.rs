//! Encoding of stored records: bincode 2 (serde mode) behind a one-byte format
//! version. Every record type that reaches the file goes through here, so the
//! on-disk format can change in one place and old versions keep a decode path.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty {record} record")]
    Empty { record: &'static str },
    #[error("{record} record has format version {version}, which this binary does not know")]
    UnknownVersion { record: &'static str, version: u8 },
    #[error("{record} record is corrupt: {detail}")]
    Corrupt {
        record: &'static str,
        detail: String,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A record stored in the file. The implementing struct is the format written
/// today (`VERSION`); when its shape changes, the old shape moves to its own
/// struct and `decode_old` keeps reading it.
pub trait Record: Serialize + DeserializeOwned {
    const NAME: &'static str;
    const VERSION: u8;

    /// Decodes an older version's body. Called only for versions below `VERSION`.
    fn decode_old(version: u8, _body: &[u8]) -> Result<Self, CodecError> {
        Err(CodecError::UnknownVersion {
            record: Self::NAME,
            version,
        })
    }
}

pub fn encode<R: Record>(record: &R) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(R::VERSION);
    // Serialising plain owned data into a Vec cannot fail: bincode errors only
    // on writer failure or serde features (unknown lengths, any) we never use.
    bincode::serde::encode_into_std_write(record, &mut out, config())
        .expect("bincode encodes plain structs into a Vec");
    out
}

pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, CodecError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or(CodecError::Empty { record: R::NAME })?;
    match version.cmp(&R::VERSION) {
        std::cmp::Ordering::Equal => decode_body(R::NAME, body),
        std::cmp::Ordering::Less => R::decode_old(version, body),
        std::cmp::Ordering::Greater => Err(CodecError::UnknownVersion {
            record: R::NAME,
            version,
        }),
    }
}

pub fn decode_body<T: DeserializeOwned>(
    record: &'static str,
    body: &[u8],
) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| {
        CodecError::Corrupt {
            record,
            detail: e.to_string(),
        }
    })?;
    if used != body.len() {
        return Err(CodecError::Corrupt {
            record,
            detail: format!("{} trailing bytes", body.len() - used),
        });
    }
    Ok(value)
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at_ms: i64,
    /// 0 when no HTTP answer arrived.
    pub status_code: u16,
    pub error: Option<String>,
    pub latency_ms: u32,
    pub response: String,
    pub manual: bool,
}

/// One event on its way to one endpoint. Its id is the table key.
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
    /// Attempts before this index do not count against the retry schedule:
    /// a recovered delivery starts the schedule afresh.
    pub schedule_from: u32,
}

impl Record for DeliveryRecord {
    const NAME: &'static str = "delivery";
    const VERSION: u8 = 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventRecord {
        EventRecord {
            id: 0x0192_f3a1_0000_7000_8000_0000_0000_0001,
            event_type: "invoice.paid".into(),
            tenant: Some("acme".into()),
            idempotency_key: Some("k1".into()),
            occurred_at_ms: 1_700_000_000_000,
            received_at_ms: 1_700_000_000_123,
            data: r#"{"amount":4200}"#.into(),
        }
    }

    /// The bytes a v1 event record has on disk. If this test fails, the file
    /// format changed: add a new version instead of editing this fixture.
    const EVENT_V1_GOLDEN: &str = "01fe010000000000008000700000a1f392010c696e766f6963652e70616964010461636d650102\
                                    6b31fd00d0ca9f17030000fdf6d0ca9f170300000f7b22616d6f756e74223a343230307d";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn event_v1_matches_golden_bytes() {
        let golden: String = EVENT_V1_GOLDEN.split_whitespace().collect();
        assert_eq!(hex(&encode(&sample())), golden);
        assert_eq!(decode::<EventRecord>(&unhex(&golden)).unwrap(), sample());
    }

    fn sample_endpoint() -> EndpointRecord {
        EndpointRecord {
            id: 0x0192_f3a1_0000_7000_8000_0000_0000_0002,
            url: "https://example.com/hook".into(),
            tenant: Some("acme".into()),
            event_types: vec!["user.*".into()],
            description: "d".into(),
            headers: vec![("x-a".into(), "b".into())],
            rate_limit_per_sec: Some(5),
            timeout_secs: None,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            old_secrets: vec![("whsec_old".into(), 1_700_000_000_000)],
            enabled: true,
            disabled_reason: None,
            payload_version: 1,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_001,
            failing_since_ms: Some(1_700_000_000_002),
        }
    }

    fn sample_delivery() -> DeliveryRecord {
        DeliveryRecord {
            endpoint_id: 2,
            event_seq: 42,
            event_id: 7,
            event_type: "invoice.paid".into(),
            status: DeliveryStatus::Pending,
            attempts: vec![AttemptRecord {
                at_ms: 1_700_000_000_000,
                status_code: 500,
                error: Some("e".into()),
                latency_ms: 12,
                response: "r".into(),
                manual: false,
            }],
            next_attempt_ms: Some(1_700_000_005_000),
            created_at_ms: 1_700_000_000_000,
            schedule_from: 0,
        }
    }

    const ENDPOINT_V1_GOLDEN: &str = "01fe020000000000008000700000a1f392011868747470733a2f2f6578616d706c652e636f6d2f686f6f6b010461636d650106757365722e2a01640103782d6101620105002677687365635f4d664b51397238474b59717254776a55504438494c505a496f324c614c615377010977687365635f6f6c64fd00d0ca9f17030000010001fd00d0ca9f17030000fd02d0ca9f1703000001fd04d0ca9f17030000";
    const DELIVERY_V1_GOLDEN: &str = "01022a070c696e766f6963652e706169640001fd00d0ca9f17030000fbf4010101650c01720001fd10f7ca9f17030000fd00d0ca9f1703000000";

    #[test]
    fn webhook_records_v1_match_golden_bytes() {
        assert_eq!(hex(&encode(&sample_endpoint())), ENDPOINT_V1_GOLDEN);
        assert_eq!(
            decode::<EndpointRecord>(&unhex(ENDPOINT_V1_GOLDEN)).unwrap(),
            sample_endpoint()
        );
        assert_eq!(hex(&encode(&sample_delivery())), DELIVERY_V1_GOLDEN);
        assert_eq!(
            decode::<DeliveryRecord>(&unhex(DELIVERY_V1_GOLDEN)).unwrap(),
            sample_delivery()
        );
    }

    #[test]
    fn newer_and_broken_records_are_errors_not_panics() {
        let mut bytes = encode(&sample());
        bytes[0] = 9;
        assert!(matches!(
            decode::<EventRecord>(&bytes),
            Err(CodecError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            decode::<EventRecord>(&[]),
            Err(CodecError::Empty { .. })
        ));
        let good = encode(&sample());
        for cut in 1..good.len() {
            assert!(decode::<EventRecord>(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode::<EventRecord>(&trailing).is_err());
    }

    fn sample_email() -> EmailRecord {
        EmailRecord {
            stream: "transactional".into(),
            from: "Acme <no-reply@acme.com>".into(),
            to: "bob@example.com".into(),
            reply_to: None,
            subject: "Hi".into(),
            text: "hello".into(),
            html: Some("<p>hello</p>".into()),
            headers: vec![("X-A".into(), "1".into())],
            tags: vec![("kind".into(), "reset".into())],
            message_id: "<1.2@acme.com>".into(),
            created_at_ms: 1_700_000_000_000,
            status: EmailStatus::Deferred,
            attempts: vec![MailAttemptRecord {
                at_ms: 1_700_000_000_100,
                code: 450,
                text: "4.2.0 later".into(),
                latency_ms: 12,
            }],
            next_attempt_ms: Some(1_700_000_060_000),
            smtp_response: None,
            flagged: false,
        }
    }

    fn sample_suppression() -> SuppressionRecord {
        SuppressionRecord {
            reason: SuppressionReason::HardBounce,
            created_at_ms: 1_700_000_000_000,
            email_id: Some(7),
        }
    }

    const EMAIL_V1_GOLDEN: &str = "010d7472616e73616374696f6e616c1841636d65203c6e6f2d7265706c794061636d652e636f6d3e\
                                    0f626f62406578616d706c652e636f6d000248690568656c6c6f010c3c703e68656c6c6f3c2f703e\
                                    0103582d41013101046b696e640572657365740e3c312e324061636d652e636f6d3efd00d0ca9f17\
                                    0300000101fdc8d0ca9f17030000fbc2010b342e322e30206c617465720c01fdc0a4cc9f17030000\
                                    0000";
    const SUPPRESSION_V1_GOLDEN: &str = "0100fd00d0ca9f170300000107";

    #[test]
    fn mail_records_v1_match_golden_bytes() {
        assert_eq!(hex(&encode(&sample_email())), EMAIL_V1_GOLDEN);
        assert_eq!(
            decode::<EmailRecord>(&unhex(EMAIL_V1_GOLDEN)).unwrap(),
            sample_email()
        );
        assert_eq!(hex(&encode(&sample_suppression())), SUPPRESSION_V1_GOLDEN);
        assert_eq!(
            decode::<SuppressionRecord>(&unhex(SUPPRESSION_V1_GOLDEN)).unwrap(),
            sample_suppression()
        );
    }
}

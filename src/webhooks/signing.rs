//! Standard Webhooks 1.0 signatures: `whsec_` secrets and `v1,` HMAC-SHA256 signatures.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";
/// The spec's bounds on the decoded key.
pub const MIN_SECRET_BYTES: usize = 24;
pub const MAX_SECRET_BYTES: usize = 64;
const GENERATED_SECRET_BYTES: usize = 32;

/// Other implementations differ on whether they pad, so both forms are read.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key of one endpoint's signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a signing secret must start with `whsec_`")]
    MissingPrefix,
    #[error("the part after `whsec_` must be standard base64 (A-Z a-z 0-9 + /)")]
    NotBase64,
    #[error(
        "the secret decodes to {0} bytes; it must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
    )]
    WrongLength(usize),
}

impl Secret {
    /// A fresh secret of 32 bytes from the operating system's random source.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        // A predictable signing key would be worse than no answer: with no
        // working kernel random source there is nothing sound to fall back to.
        getrandom::fill(&mut key).expect("the operating system's random source failed");
        Secret { key }
    }

    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = LENIENT_STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::WrongLength(key.len()));
        }
        Ok(Secret { key })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

/// Redacted, so that a secret logged by accident stays secret.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.key.len())
    }
}

/// One `v1,<base64>` signature over `{msg_id}.{timestamp_secs}.{body}`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never refuses; an empty
    // signature (which every receiver rejects) keeps the function total.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.key) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(digest))
}

/// The `webhook-signature` value: one signature per secret, space-separated,
/// so receivers holding either the new or the old secret during a rotation
/// can verify.
pub fn signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's second vector uses an 18-byte key, shorter than `parse`
    /// accepts, so the vectors build their keys directly.
    fn secret_from_text(text: &str) -> Secret {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap();
        Secret {
            key: LENIENT_STANDARD.decode(encoded).unwrap(),
        }
    }

    #[test]
    fn golden_vector_one() {
        let secret = secret_from_text("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let signature = sign(
            &secret,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn golden_vector_two() {
        let secret = secret_from_text("whsec_plJ3nmyCDGBKInavdOK15jsl");
        let signature = sign(
            &secret,
            "msg_loFOjxBNrRLzqYUf",
            1731705121,
            br#"{"event_type":"ping","data":{"success":true}}"#,
        );
        assert_eq!(signature, "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=");
    }

    #[test]
    fn golden_vector_one_through_parse() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(secret.to_string(), "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    }

    #[test]
    fn rotation_sends_every_signature_in_order() {
        let new = Secret::generate();
        let old = Secret::generate();
        let body = b"{}";
        let header = signature_header(&[&new, &old], "msg_1", 1700000000, body);
        let expected = format!(
            "{} {}",
            sign(&new, "msg_1", 1700000000, body),
            sign(&old, "msg_1", 1700000000, body)
        );
        assert_eq!(header, expected);
        assert_eq!(signature_header(&[], "msg_1", 1700000000, body), "");
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let first = Secret::generate();
        let second = Secret::generate();
        assert_ne!(first, second);
        let text = first.to_string();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), first);
    }

    #[test]
    fn parse_accepts_both_ends_of_the_length_range_padded_or_not() {
        for len in [MIN_SECRET_BYTES, 32, 33, MAX_SECRET_BYTES] {
            let key = vec![7u8; len];
            let padded = format!("whsec_{}", STANDARD.encode(&key));
            assert_eq!(Secret::parse(&padded).unwrap().key, key, "{padded}");
            let unpadded = padded.trim_end_matches('=');
            assert_eq!(Secret::parse(unpadded).unwrap().key, key, "{unpadded}");
        }
    }

    #[test]
    fn parse_refuses_bad_prefixes_lengths_and_base64() {
        let valid_body = STANDARD.encode([1u8; 32]);
        for text in [
            valid_body.clone(),
            format!("WHSEC_{valid_body}"),
            format!("whsec{valid_body}"),
            format!("sk_{valid_body}"),
            format!(" whsec_{valid_body}"),
        ] {
            assert_eq!(
                Secret::parse(&text),
                Err(SecretError::MissingPrefix),
                "{text}"
            );
        }
        for text in [
            "whsec_not base64!".to_owned(),
            format!("whsec_{valid_body} "),
            "whsec_A".to_owned(),
        ] {
            assert_eq!(Secret::parse(&text), Err(SecretError::NotBase64), "{text}");
        }
        // URL-safe alphabet is a different encoding, not a variant spelling.
        let url_safe = format!(
            "whsec_{}",
            STANDARD
                .encode([0xfbu8; 30])
                .replace('+', "-")
                .replace('/', "_")
        );
        assert_eq!(Secret::parse(&url_safe), Err(SecretError::NotBase64));

        assert_eq!(Secret::parse("whsec_"), Err(SecretError::WrongLength(0)));
        let short = format!("whsec_{}", STANDARD.encode([1u8; 23]));
        assert_eq!(Secret::parse(&short), Err(SecretError::WrongLength(23)));
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        assert_eq!(Secret::parse(&long), Err(SecretError::WrongLength(65)));
        assert!(SecretError::WrongLength(23)
            .to_string()
            .contains("24 to 64 bytes"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("C2FV"), "{shown}");
    }
}

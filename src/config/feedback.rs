//! The `[feedback.*]` tables: which ESPs may post bounces and complaints,
//! each with the key or secret its webhooks are checked with.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

use super::values::{invalid, ConfigError};
use crate::feedback::settings::{
    FeedbackSettings, MailgunSettings, PostmarkSettings, ResendSettings, SendgridSettings,
    SesSettings,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackSection {
    pub ses: Option<SesSection>,
    pub sendgrid: Option<SendgridSection>,
    pub postmark: Option<PostmarkSection>,
    pub mailgun: Option<MailgunSection>,
    pub resend: Option<ResendSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SesSection {
    /// SNS topics whose notifications are accepted; at least one.
    pub topic_arns: Vec<String>,
    /// Hosts the signing certificate may come from (HTTPS only); `*` is one
    /// DNS label.
    pub cert_hosts: Vec<String>,
    /// Extra CA certificates (PEM) trusted for those hosts.
    pub ca_file: Option<PathBuf>,
    /// Confirm an allowed topic's subscription request by itself.
    pub auto_confirm: bool,
}

impl Default for SesSection {
    fn default() -> Self {
        SesSection {
            topic_arns: Vec::new(),
            cert_hosts: vec![
                "sns.*.amazonaws.com".to_owned(),
                "sns.*.amazonaws.com.cn".to_owned(),
            ],
            ca_file: None,
            auto_confirm: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendgridSection {
    /// The verification key as SendGrid shows it: base64 of its DER form.
    pub public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostmarkSection {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailgunSection {
    pub signing_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResendSection {
    /// `whsec_` followed by base64.
    pub secret: String,
}

// The sections hold secrets; only which are present is ever printed.
macro_rules! redacted_debug {
    ($($section:ident),*) => {$(
        impl std::fmt::Debug for $section {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($section), " { .. }"))
            }
        }
    )*};
}
redacted_debug!(
    SendgridSection,
    PostmarkSection,
    MailgunSection,
    ResendSection
);

/// Checks every configured provider. No message quotes a key or secret.
pub fn validate_feedback(section: FeedbackSection) -> Result<FeedbackSettings, ConfigError> {
    let ses = section.ses.map(validate_ses).transpose()?;
    let sendgrid = match section.sendgrid {
        None => None,
        Some(s) => {
            let der = base64::engine::general_purpose::STANDARD
                .decode(s.public_key.trim())
                .ok()
                .filter(|der| crate::feedback::sendgrid::check_public_key(der).is_ok())
                .ok_or_else(|| {
                    invalid(
                        "feedback.sendgrid.public_key",
                        "is not a base64 ECDSA P-256 public key; paste the verification key SendGrid shows",
                    )
                })?;
            Some(SendgridSettings {
                public_key_der: der,
            })
        }
    };
    let postmark = match section.postmark {
        None => None,
        Some(s) => {
            if s.username.is_empty() || s.password.len() < 12 {
                return Err(invalid(
                    "feedback.postmark",
                    "needs a username and a password of at least 12 characters",
                ));
            }
            Some(PostmarkSettings {
                username: s.username,
                password: s.password,
            })
        }
    };
    let mailgun = match section.mailgun {
        None => None,
        Some(s) if s.signing_key.trim().len() < 16 => {
            return Err(invalid(
                "feedback.mailgun.signing_key",
                "is too short to be Mailgun's webhook signing key",
            ))
        }
        Some(s) => Some(MailgunSettings {
            signing_key: s.signing_key.trim().to_owned(),
        }),
    };
    let resend = match section.resend {
        None => None,
        Some(s) => {
            let secret = s
                .secret
                .trim()
                .strip_prefix("whsec_")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .filter(|key| key.len() >= 16)
                .ok_or_else(|| {
                    invalid(
                        "feedback.resend.secret",
                        "must be `whsec_` followed by base64, as Resend shows it",
                    )
                })?;
            Some(ResendSettings { secret })
        }
    };
    Ok(FeedbackSettings {
        ses,
        sendgrid,
        postmark,
        mailgun,
        resend,
    })
}

fn validate_ses(s: SesSection) -> Result<SesSettings, ConfigError> {
    if s.topic_arns.is_empty() {
        return Err(invalid(
            "feedback.ses.topic_arns",
            "name at least one SNS topic (arn:aws:sns:REGION:ACCOUNT:NAME)",
        ));
    }
    if let Some(bad) = s.topic_arns.iter().find(|a| !a.starts_with("arn:")) {
        return Err(invalid(
            "feedback.ses.topic_arns",
            format!("`{bad}` is not an ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"),
        ));
    }
    if s.cert_hosts.is_empty() {
        return Err(invalid(
            "feedback.ses.cert_hosts",
            "name at least one host pattern, such as sns.*.amazonaws.com",
        ));
    }
    let well_formed = |pattern: &str| {
        !pattern.is_empty()
            && pattern
                .split('.')
                .all(|label| label == "*" || is_dns_label(label))
    };
    if let Some(bad) = s.cert_hosts.iter().find(|p| !well_formed(p)) {
        return Err(invalid(
            "feedback.ses.cert_hosts",
            format!("`{bad}` is not a host name pattern (labels, or `*` for one label)"),
        ));
    }
    let ca_pem = match &s.ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    "feedback.ses.ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            crate::tls::ca_certificates(&pem).map_err(|e| {
                invalid(
                    "feedback.ses.ca_file",
                    format!("{} holds no usable CA certificate: {e}", path.display()),
                )
            })?;
            Some(pem)
        }
    };
    Ok(SesSettings {
        topic_arns: s.topic_arns,
        cert_hosts: s
            .cert_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        ca_pem,
        auto_confirm: s.auto_confirm,
    })
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FeedbackSettings, ConfigError> {
        validate_feedback(toml::from_str(text).expect("toml"))
    }

    #[test]
    fn nothing_configured_enables_nothing() {
        let settings = parse("").unwrap();
        for provider in crate::feedback::Provider::ALL {
            assert!(!settings.is_enabled(provider));
        }
    }

    #[test]
    fn ses_needs_topics_and_keeps_the_aws_certificate_hosts_by_default() {
        assert!(parse("[ses]\n").is_err());
        let settings = parse("[ses]\ntopic_arns = [\"arn:aws:sns:eu-west-1:1:t\"]\n").unwrap();
        let ses = settings.ses.unwrap();
        assert_eq!(
            ses.cert_hosts,
            ["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"]
        );
        assert!(ses.auto_confirm);
        let bad = parse("[ses]\ntopic_arns = [\"arn:x\"]\ncert_hosts = [\"evil/host\"]\n");
        assert!(bad.is_err());
    }

    #[test]
    fn secrets_are_checked_and_never_quoted() {
        let err = parse("[resend]\nsecret = \"not-a-secret-value\"\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not-a-secret-value"), "{err}");
        let err = parse("[sendgrid]\npublic_key = \"%%%secret%%%\"\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret%"), "{err}");
        let ok = parse("[resend]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n").unwrap();
        assert_eq!(ok.resend.as_ref().unwrap().secret.len(), 24);
        assert!(format!("{ok:?}").contains("resend"));
    }
}

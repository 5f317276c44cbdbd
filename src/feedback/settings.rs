//! Feedback settings as the daemon uses them, after `config::feedback`
//! checked the file: one entry per enabled provider.

use std::fmt;

/// `[feedback.ses]`: SNS notifications of SES events.
#[derive(Clone)]
pub struct SesSettings {
    /// Only these topics' messages are accepted (and confirmed).
    pub topic_arns: Vec<String>,
    /// Host patterns the signing certificate (and a subscription's confirm
    /// URL) may be fetched from, over HTTPS only: `*` stands for one DNS
    /// label. Default: `sns.*.amazonaws.com`, `sns.*.amazonaws.com.cn`.
    pub cert_hosts: Vec<String>,
    /// Extra trusted roots (PEM) for those HTTPS fetches, beside the
    /// public ones (tests serve certificates from a local CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Confirm an allowed topic's `SubscriptionConfirmation` at once.
    pub auto_confirm: bool,
}

/// `[feedback.sendgrid]`
#[derive(Clone)]
pub struct SendgridSettings {
    /// The verification key: an ECDSA P-256 SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
}

/// `[feedback.postmark]`: the basic-auth pair in the webhook's URL.
#[derive(Clone)]
pub struct PostmarkSettings {
    pub username: String,
    pub password: String,
}

/// `[feedback.mailgun]`
#[derive(Clone)]
pub struct MailgunSettings {
    /// The HTTP webhook signing key, as Mailgun shows it.
    pub signing_key: String,
}

/// `[feedback.resend]`
#[derive(Clone)]
pub struct ResendSettings {
    /// The Standard Webhooks secret, decoded from `whsec_BASE64`.
    pub secret: Vec<u8>,
}

/// Every provider that is configured; the others' routes answer 404.
#[derive(Clone, Default)]
pub struct FeedbackSettings {
    pub ses: Option<SesSettings>,
    pub sendgrid: Option<SendgridSettings>,
    pub postmark: Option<PostmarkSettings>,
    pub mailgun: Option<MailgunSettings>,
    pub resend: Option<ResendSettings>,
}

impl FeedbackSettings {
    pub fn is_enabled(&self, provider: super::Provider) -> bool {
        use super::Provider::*;
        match provider {
            Ses => self.ses.is_some(),
            Sendgrid => self.sendgrid.is_some(),
            Postmark => self.postmark.is_some(),
            Mailgun => self.mailgun.is_some(),
            Resend => self.resend.is_some(),
        }
    }
}

impl fmt::Debug for FeedbackSettings {
    // Keys and passwords are never printed: only which providers are on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enabled: Vec<&str> = super::Provider::ALL
            .into_iter()
            .filter(|p| self.is_enabled(*p))
            .map(|p| p.as_str())
            .collect();
        f.debug_struct("FeedbackSettings")
            .field("enabled", &enabled)
            .finish()
    }
}

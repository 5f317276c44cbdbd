//! Turns a stored message into the bytes handed to the relay: MIME parts,
//! the headers Herald owns, the ESP correlation header, one-click
//! unsubscribe and the DKIM signature.

use std::time::{Duration, UNIX_EPOCH};

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox as LettreMailbox, MultiPart, SinglePart};
use lettre::Message;

use super::address::{domain_of, parse_mailbox};
use super::ledger::format_email_id;
use super::settings::{Esp, StreamSettings};
use super::unsubscribe::TokenKey;
use crate::store::records::EmailRecord;

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("stored address `{0}` no longer parses")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("DKIM key: {0}")]
    Dkim(String),
}

/// Parsed signing configurations by (stream, signing domain, has Reply-To): parsing an
/// RSA key costs more than signing with it.
pub type DkimCache = std::collections::HashMap<(String, String, bool), DkimConfig>;

/// What composing needs besides the message itself.
pub struct Composer<'a> {
    pub stream: &'a StreamSettings,
    pub public_url: &'a str,
    pub tokens: &'a TokenKey,
}

fn raw(name: &str, value: String) -> Result<HeaderValue, ComposeError> {
    let name = HeaderName::new_from_ascii(name.to_owned())
        .map_err(|_| ComposeError::Build(format!("header name `{name}`")))?;
    Ok(HeaderValue::new(name, value))
}

fn mailbox(text: &str) -> Result<LettreMailbox, ComposeError> {
    parse_mailbox(text)
        .ok()
        .and_then(|m| m.to_lettre().ok())
        .ok_or_else(|| ComposeError::Address(text.to_owned()))
}

impl Composer<'_> {
    /// The List-Unsubscribe value for this recipient, when the stream wants
    /// it. A tenant's message names the tenant, so the unsubscribe lands on
    /// that tenant's list and leaves other senders' mail alone.
    pub fn unsubscribe_header(&self, to: &str, tenant: Option<&str>) -> Option<String> {
        if !self.stream.unsubscribe {
            return None;
        }
        let token = self.tokens.token(&self.stream.name, to, tenant);
        let mut value = format!("<{}/u/{token}>", self.public_url);
        if let Some(mailto) = &self.stream.unsubscribe_mailto {
            value.push_str(&format!(", <mailto:{mailto}?subject=unsubscribe>"));
        }
        Some(value)
    }

    pub fn build(&self, id: u64, record: &EmailRecord) -> Result<Message, ComposeError> {
        let herald_id = format_email_id(id);
        let mut builder = Message::builder()
            .from(mailbox(&record.from)?)
            .to(mailbox(&record.to)?)
            .subject(record.subject.clone())
            .date(UNIX_EPOCH + Duration::from_millis(record.created_at_ms.max(0) as u64))
            .message_id(Some(record.message_id.clone()))
            .raw_header(raw("X-Herald-Id", herald_id.clone())?);
        if let Some(reply_to) = &record.reply_to {
            builder = builder.reply_to(mailbox(reply_to)?);
        }
        for (name, value) in &record.headers {
            builder = builder.raw_header(raw(name, value.clone())?);
        }
        let metadata = self.stream.esp.and_then(|esp| match esp {
            Esp::Ses => Some(("X-SES-MESSAGE-TAGS", format!("herald_id={herald_id}"))),
            Esp::Sendgrid => Some((
                "X-SMTPAPI",
                serde_json::json!({"unique_args": {"herald_id": herald_id}}).to_string(),
            )),
            Esp::Postmark => Some(("X-PM-Metadata-herald-id", herald_id.clone())),
            Esp::Mailgun => Some((
                "X-Mailgun-Variables",
                serde_json::json!({"herald_id": herald_id}).to_string(),
            )),
            Esp::Resend => None,
        });
        if let Some((name, value)) = metadata {
            builder = builder.raw_header(raw(name, value)?);
        }
        if let Some(value) = self.unsubscribe_header(&record.to, record.tenant.as_deref()) {
            builder = builder
                .raw_header(raw("List-Unsubscribe", value)?)
                .raw_header(raw(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".to_owned(),
                )?);
        }
        let built = match &record.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                record.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(record.text.clone())),
        };
        built.map_err(|e| ComposeError::Build(e.to_string()))
    }

    /// Signs with the stream's key, relaxed/relaxed: lettre's default
    /// `simple` header canonicalisation produces signatures that fail to
    /// verify. Content-Type is left out: lettre rewrites it for multipart.
    pub fn sign(
        &self,
        message: &mut Message,
        record: &EmailRecord,
        cache: &mut DkimCache,
    ) -> Result<(), ComposeError> {
        let Some(dkim) = &self.stream.dkim else {
            return Ok(());
        };
        let from_domain = parse_mailbox(&record.from)
            .map(|m| m.domain().to_owned())
            .unwrap_or_else(|_| domain_of(&record.from).to_owned());
        let domain = dkim.domain.clone().unwrap_or(from_domain);
        let cache_key = (
            self.stream.name.clone(),
            domain.clone(),
            record.reply_to.is_some(),
        );
        if let Some(config) = cache.get(&cache_key) {
            message.sign(config);
            return Ok(());
        }
        let key = DkimSigningKey::new(&dkim.key_pem, DkimSigningAlgorithm::Rsa)
            .map_err(|e| ComposeError::Dkim(e.to_string()))?;
        let mut headers: Vec<HeaderName> = [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
        ]
        .into_iter()
        .map(HeaderName::new_from_ascii_str)
        .collect();
        if record.reply_to.is_some() {
            headers.push(HeaderName::new_from_ascii_str("Reply-To"));
        }
        if self.stream.unsubscribe {
            headers.push(HeaderName::new_from_ascii_str("List-Unsubscribe"));
            headers.push(HeaderName::new_from_ascii_str("List-Unsubscribe-Post"));
        }
        let config = DkimConfig::new(
            dkim.selector.clone(),
            domain,
            key,
            headers,
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        message.sign(&config);
        cache.insert(cache_key, config);
        Ok(())
    }
}

//! One attempt at one message, whichever backend queued it: compose, sign
//! and relay it, and report what the relay answered. The rules that act
//! on the report (`ledger::record_attempt`) run in the backend's own
//! transaction.

use std::collections::HashMap;
use std::time::Instant;

use super::classify::queued_as;
use super::compose::{Composer, DkimCache};
use super::ledger::format_email_id;
use super::policy::{AttemptReport, MailRetry};
use super::relay::{Destination, RelayClient, RelayTlsConfig, Reply};
use super::settings::{MailSettings, PublicSettings};
use super::unsubscribe::TokenKey;
use crate::clock;
use crate::metrics::{self, SendResult};
use crate::store::records::EmailRecord;

/// What every sender thread shares: the settings, the unsubscribe links'
/// key, the retry policy, and each relay's TLS settings, checked at start.
pub struct Sending {
    pub settings: MailSettings,
    pub public: PublicSettings,
    pub tokens: TokenKey,
    pub retry: MailRetry,
    relay_tls: HashMap<String, RelayTlsConfig>,
}

impl Sending {
    pub fn new(
        settings: MailSettings,
        public: PublicSettings,
        tokens: TokenKey,
    ) -> Result<Self, String> {
        let mut relay_tls = HashMap::new();
        for (name, stream) in &settings.streams {
            if let Some(relay) = &stream.relay {
                let tls = RelayTlsConfig::new(relay)
                    .map_err(|e| format!("mail.streams.{name}.relay: {e}"))?;
                relay_tls.insert(name.clone(), tls);
            }
        }
        Ok(Sending {
            retry: MailRetry::new(&settings),
            settings,
            public,
            tokens,
            relay_tls,
        })
    }

    /// A thread's own destinations: each holds its own relay connection.
    fn destinations(&self) -> HashMap<String, Destination> {
        self.settings
            .streams
            .iter()
            .map(|(name, stream)| {
                let destination = match (&stream.relay, self.relay_tls.get(name)) {
                    (Some(relay), Some(tls)) => Destination::Smtp(Box::new(RelayClient::new(
                        relay.clone(),
                        tls.clone(),
                        self.settings.timeout,
                    ))),
                    _ => Destination::Outbox(self.settings.outbox.clone()),
                };
                (name.clone(), destination)
            })
            .collect()
    }
}

/// One sender thread's relay connections and DKIM keys, and the runtime
/// that drives its SMTP conversations.
pub struct Relayer {
    dkim: DkimCache,
    destinations: HashMap<String, Destination>,
    runtime: tokio::runtime::Runtime,
}

impl Relayer {
    pub fn new(sending: &Sending) -> std::io::Result<Self> {
        Ok(Relayer {
            dkim: DkimCache::new(),
            destinations: sending.destinations(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// Composes, signs and relays message `id`; `None` when its stream is
    /// no longer configured (it stays queued).
    pub fn attempt(
        &mut self,
        sending: &Sending,
        id: u64,
        record: &EmailRecord,
    ) -> Option<AttemptReport> {
        let stream = record.stream.as_str();
        let Some(settings) = sending.settings.streams.get(stream) else {
            tracing::warn!(stream, email = %format_email_id(id), "the message's stream is no longer configured; it stays queued");
            return None;
        };
        let composer = Composer {
            stream: settings,
            public_url: &sending.public.url,
            tokens: &sending.tokens,
        };
        let started = Instant::now();
        let at_ms = clock::now_ms();
        let mut relayed = false;
        let reply = match composer.build(id, record) {
            Ok(mut message) => match composer.sign(&mut message, record, &mut self.dkim) {
                Ok(()) => {
                    let bytes = message.formatted();
                    match self.destinations.get_mut(stream) {
                        Some(destination) => {
                            relayed = matches!(destination, Destination::Smtp(_));
                            destination.send(
                                &self.runtime,
                                &format_email_id(id),
                                message.envelope(),
                                &bytes,
                            )
                        }
                        None => Reply {
                            code: 0,
                            text: format!("stream `{stream}` has no destination"),
                            about_recipient: false,
                        },
                    }
                }
                Err(e) => Reply {
                    code: 0,
                    text: e.to_string(),
                    about_recipient: false,
                },
            },
            // Validated at queueing, so only a bug or a changed rule gets here.
            Err(e) => Reply {
                code: 554,
                text: format!("5.6.0 {e}"),
                about_recipient: false,
            },
        };
        if let Some(series) = metrics::mail_stream(stream) {
            series.sent(SendResult::of_reply(reply.code), started.elapsed());
        }
        Some(AttemptReport {
            at_ms,
            code: reply.code,
            about_recipient: reply.about_recipient,
            latency_ms: started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32,
            random_unit: crate::ids::random_unit(),
            provider_id: if relayed && (200..300).contains(&reply.code) {
                queued_as(&reply.text)
            } else {
                None
            },
            text: reply.text,
        })
    }
}

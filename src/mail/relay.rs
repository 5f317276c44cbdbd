//! Where a stream's mail goes: a pooled SMTP connection to its relay, or
//! `.eml` files in the outbox when no relay is configured.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{SmtpTransport, Transport};

use super::config::{Relay, RelayTls};

/// The relay's answer to one message: (reply code, reply text). Code 0
/// means no answer (connection, TLS or timeout failure).
pub type Reply = (u16, String);

pub enum Destination {
    Smtp(SmtpTransport),
    Outbox(PathBuf),
}

impl Destination {
    pub fn smtp(relay: &Relay, timeout: Duration, pool_size: u32) -> Result<Self, String> {
        let mut builder = SmtpTransport::builder_dangerous(relay.host.clone())
            .port(relay.port)
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(pool_size.max(1))
                    .idle_timeout(Duration::from_secs(60)),
            );
        if relay.tls != RelayTls::None {
            let mut params = TlsParameters::builder(relay.host.clone());
            if let Some(pem) = &relay.ca_pem {
                let cert = Certificate::from_pem(pem)
                    .map_err(|e| format!("relay_ca_file is not a PEM certificate: {e}"))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("TLS setup for {}: {e}", relay.host))?;
            builder = builder.tls(match relay.tls {
                RelayTls::Implicit => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let Some((user, pass)) = &relay.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Destination::Smtp(builder.build()))
    }

    /// Hands one message to the destination.
    pub fn send(&self, name: &str, envelope: &Envelope, bytes: &[u8]) -> Reply {
        match self {
            Destination::Smtp(transport) => match transport.send_raw(envelope, bytes) {
                Ok(response) => (
                    response.code().to_string().parse().unwrap_or(250),
                    response.message().collect::<Vec<_>>().join(" "),
                ),
                Err(e) => match e.status() {
                    Some(code) => (
                        code.to_string().parse().unwrap_or(0),
                        std::error::Error::source(&e)
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    ),
                    None => (0, e.to_string()),
                },
            },
            Destination::Outbox(dir) => match write_eml(dir, name, bytes) {
                Ok(path) => (250, format!("2.0.0 written to {}", path.display())),
                Err(e) => (
                    0,
                    format!("cannot write to the outbox {}: {e}", dir.display()),
                ),
            },
        }
    }
}

/// Writes `name.eml` whole or not at all: a temporary file, fsync, rename.
fn write_eml(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.eml"));
    let partial = dir.join(format!(".{name}.eml.partial"));
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

//! The TLS client every outbound connection uses (webhook deliveries, SNS
//! certificates over HTTPS; PostgreSQL): Mozilla's roots, plus a
//! configured CA where one is allowed, on ring.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// A client configuration verifying servers against Mozilla's roots and
/// `extra_roots`, offering no ALPN protocol: callers name their own.
pub fn client_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for certificate in extra_roots {
        roots
            .add(certificate)
            .map_err(|e| format!("a CA certificate is not usable as a root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS is unavailable: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector trusting Mozilla's roots and `extra_roots`, speaking
/// HTTP/1.1.
pub fn https_connector(extra_roots: Vec<CertificateDer<'static>>) -> Result<TlsConnector, String> {
    let mut config = client_config(extra_roots)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The CA certificates in a PEM file (a config's `ca_file`), refused when
/// it holds none or an unreadable one; empty text is no extra CA.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if pem.is_empty() {
        return Ok(Vec::new());
    }
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA file is not readable PEM: {e}"))?;
    if certificates.is_empty() {
        return Err("the CA file holds no certificate".to_owned());
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_read_as_pem_and_junk_is_refused() {
        let ca = include_bytes!("../tests/fixtures/feedback/tls_ca.pem");
        let certificates = ca_certificates(ca).unwrap();
        assert_eq!(certificates.len(), 1);
        assert!(ca_certificates(b"").unwrap().is_empty());
        assert!(ca_certificates(b"not pem at all").is_err());
        assert!(https_connector(certificates.clone()).is_ok());
        assert!(client_config(certificates)
            .unwrap()
            .alpn_protocols
            .is_empty());
    }
}

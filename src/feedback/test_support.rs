//! Test keys and signers standing in for the providers': a P-256 pair
//! made per test (SendGrid) and the checked-in throwaway RSA key and
//! certificate (SNS).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::HeaderMap;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

use super::sendgrid::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::settings::SendgridSettings;

/// The tests' clock: 2026-03-01T12:00:00Z, the pre-signed SNS fixture's time.
pub const NOW_MS: i64 = 1_772_366_400_000;
pub const NOW_SECS: &str = "1772366400";

pub const SNS_CERT_PEM: &[u8] =
    include_bytes!("../../tests/fixtures/feedback/sns_signing_cert.pem");
const SNS_KEY_PEM: &[u8] = include_bytes!("../../tests/fixtures/feedback/sns_signing_key.pem");
/// An SES bounce signed with SignatureVersion 1 (SHA-1), which ring
/// cannot sign: made by make_fixtures.py.
pub const SNS_V1_BOUNCE: &str = include_str!("../../tests/fixtures/feedback/sns_v1_bounce.json");
pub const TLS_CA_PEM: &[u8] = include_bytes!("../../tests/fixtures/feedback/tls_ca.pem");
pub const TLS_LOCALHOST_CERT_PEM: &[u8] =
    include_bytes!("../../tests/fixtures/feedback/tls_localhost_cert.pem");
pub const TLS_LOCALHOST_KEY_PEM: &[u8] =
    include_bytes!("../../tests/fixtures/feedback/tls_localhost_key.pem");

/// A P-256 SPKI is a fixed 26-byte header and the 65-byte point.
pub const P256_SPKI_HEADER: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A key pair made for the test, standing in for SendGrid's.
pub struct SendgridSigner {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SendgridSigner {
    pub fn new() -> SendgridSigner {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        SendgridSigner { pair, rng }
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn settings(&self) -> SendgridSettings {
        SendgridSettings {
            public_key_der: [&P256_SPKI_HEADER[..], self.public_key()].concat(),
        }
    }

    pub fn headers(&self, timestamp: &str, body: &[u8]) -> HeaderMap {
        let signed = [timestamp.as_bytes(), body].concat();
        let signature = self.pair.sign(&self.rng, &signed).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            STANDARD.encode(signature).parse().unwrap(),
        );
        headers.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
        headers
    }
}

/// The RSA SHA-256 signature (SignatureVersion 2) of `text` with the
/// fixture key, base64.
pub fn sns_sign_v2(text: &str) -> String {
    let der = x509_cert::der::pem::decode_vec(SNS_KEY_PEM).unwrap().1;
    let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        text.as_bytes(),
        &mut signature,
    )
    .unwrap();
    STANDARD.encode(signature)
}

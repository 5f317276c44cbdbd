//! Public keys out of DER, in the form ring verifies with: the ECDSA P-256
//! point of a SubjectPublicKeyInfo (SendGrid) and the RSA key of an X.509
//! certificate (SNS).

use x509_cert::der::{Decode, DecodePem};
use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use x509_cert::Certificate;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The uncompressed P-256 point inside an ECDSA P-256 SubjectPublicKeyInfo.
pub fn p256_point(spki_der: &[u8]) -> Result<Vec<u8>, String> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
    if spki.algorithm.oid != EC_PUBLIC_KEY {
        return Err(format!(
            "not an elliptic-curve key (algorithm {})",
            spki.algorithm.oid
        ));
    }
    let curve = spki
        .algorithm
        .parameters
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if curve != Some(P256) {
        return Err("not a P-256 key".to_owned());
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the key's bit string is not whole bytes")?;
    // 0x04 ‖ X ‖ Y: ring reads only the uncompressed form.
    if point.len() != 65 || point[0] != 4 {
        return Err("not an uncompressed P-256 point".to_owned());
    }
    Ok(point.to_vec())
}

/// The PKCS#1 RSAPublicKey of a certificate given as PEM or DER.
pub fn certificate_rsa_key(pem_or_der: &[u8]) -> Result<Vec<u8>, String> {
    let certificate = if looks_like_pem(pem_or_der) {
        Certificate::from_pem(pem_or_der).map_err(|e| format!("not a PEM certificate: {e}"))?
    } else {
        Certificate::from_der(pem_or_der).map_err(|e| format!("not a DER certificate: {e}"))?
    };
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(format!(
            "the certificate's key is not RSA (algorithm {})",
            spki.algorithm.oid
        ));
    }
    spki.subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "the certificate's key bit string is not whole bytes".to_owned())
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes[start..].starts_with(b"-----BEGIN")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::{
        SendgridSigner, P256_SPKI_HEADER, SNS_CERT_PEM as SNS_CERT, TLS_CA_PEM as TLS_CA,
    };

    #[test]
    fn the_point_of_a_generated_p256_key_is_found() {
        let signer = SendgridSigner::new();
        let spki = [&P256_SPKI_HEADER[..], signer.public_key()].concat();
        assert_eq!(p256_point(&spki).unwrap(), signer.public_key());
        assert!(p256_point(&spki[..spki.len() - 1]).is_err());
        assert!(p256_point(b"MFkw").is_err());
    }

    #[test]
    fn an_rsa_certificate_yields_its_key_in_pem_or_der() {
        let from_pem = certificate_rsa_key(SNS_CERT).unwrap();
        // RSAPublicKey ::= SEQUENCE { modulus, exponent }
        assert_eq!(from_pem[0], 0x30);
        assert!(from_pem.len() > 256);
        let der = x509_cert::der::pem::decode_vec(SNS_CERT).unwrap().1;
        assert_eq!(certificate_rsa_key(&der).unwrap(), from_pem);
    }

    #[test]
    fn a_non_rsa_or_broken_certificate_is_refused() {
        let error = certificate_rsa_key(TLS_CA).unwrap_err();
        assert!(error.contains("not RSA"), "{error}");
        assert!(certificate_rsa_key(b"").is_err());
        assert!(certificate_rsa_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert!(certificate_rsa_key(&SNS_CERT[..SNS_CERT.len() / 2]).is_err());
    }
}

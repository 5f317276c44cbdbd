//! Customer portal links: a tenant and an expiry with an HMAC over them,
//! so a link grants one tenant's portal until it expires and cannot be
//! altered into another tenant's or a later expiry. Nothing is stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::names::is_valid_tenant;

/// 128 bits of MAC: far beyond guessing, and the URL stays short.
const MAC_BYTES: usize = 16;

/// Domain separation: the same persistent secret never signs another kind
/// of token, and a token of another kind never verifies here.
const CONTEXT: &[u8] = b"herald-portal-v1\0";

/// Longer tokens than any genuine one are refused before decoding.
const MAX_TOKEN_CHARS: usize = 512;

#[derive(Clone)]
pub struct PortalKey([u8; 32]);

/// Why a token grants nothing. Both answer the same to the visitor; the
/// difference is for logs and the page's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not made by this daemon, or altered.
    Invalid,
    /// Genuine, but past its expiry.
    Expired,
}

/// What a genuine, unexpired token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalGrant {
    pub tenant: String,
    pub expires_at_ms: i64,
}

impl PortalKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        PortalKey(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(CONTEXT);
        mac
    }

    /// A token for `tenant`'s portal until `expires_at_ms` (Unix ms).
    pub fn mint(&self, tenant: &str, expires_at_ms: i64) -> String {
        let mut payload = expires_at_ms.to_be_bytes().to_vec();
        payload.extend_from_slice(tenant.as_bytes());
        let mut mac = self.mac();
        mac.update(&payload);
        payload.extend_from_slice(&mac.finalize().into_bytes()[..MAC_BYTES]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The grant of a genuine token that has not expired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<PortalGrant, Refused> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(Refused::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Refused::Invalid)?;
        if bytes.len() <= 8 + MAC_BYTES {
            return Err(Refused::Invalid);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_truncated_left(tag)
            .map_err(|_| Refused::Invalid)?;
        let (expiry, tenant) = payload.split_at(8);
        let expires_at_ms = i64::from_be_bytes(expiry.try_into().expect("split at 8"));
        let tenant = std::str::from_utf8(tenant).map_err(|_| Refused::Invalid)?;
        if !is_valid_tenant(tenant) {
            return Err(Refused::Invalid);
        }
        if now_ms >= expires_at_ms {
            return Err(Refused::Expired);
        }
        Ok(PortalGrant {
            tenant: tenant.to_owned(),
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_grants_its_tenant_until_it_expires() {
        let key = PortalKey::new([3; 32]);
        let token = key.mint("acme", 1_000);
        assert_eq!(
            key.verify(&token, 999),
            Ok(PortalGrant {
                tenant: "acme".into(),
                expires_at_ms: 1_000
            })
        );
        assert_eq!(key.verify(&token, 1_000), Err(Refused::Expired));
    }

    #[test]
    fn altered_foreign_or_garbage_tokens_grant_nothing() {
        let key = PortalKey::new([3; 32]);
        let token = key.mint("acme", i64::MAX);
        assert_eq!(
            PortalKey::new([4; 32]).verify(&token, 0),
            Err(Refused::Invalid)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(key.verify(&altered, 0), Err(Refused::Invalid), "byte {i}");
            bytes[i] ^= 1;
        }
        for garbage in ["", "a", "!!!!", &"A".repeat(600), &token[..token.len() - 2]] {
            assert_eq!(key.verify(garbage, 0), Err(Refused::Invalid), "{garbage}");
        }
    }

    #[test]
    fn a_token_names_one_tenant_and_cannot_be_stretched_to_another() {
        let key = PortalKey::new([3; 32]);
        let a = key.mint("a", i64::MAX);
        let ab = key.mint("ab", i64::MAX);
        assert_ne!(a, ab);
        assert_eq!(key.verify(&ab, 0).unwrap().tenant, "ab");
    }
}

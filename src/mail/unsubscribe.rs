//! One-click unsubscribe tokens (RFC 8058): the stream, the address and,
//! for a tenant's message, the tenant, with an HMAC over them, so a link
//! cannot be forged or altered and needs no stored state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::names::is_valid_tenant;

/// Bytes of the MAC kept in a token: 128 bits is far beyond guessing.
const MAC_BYTES: usize = 16;

/// Streams, addresses and tenants never hold it, so the parts of a
/// payload cannot be shifted from one into another.
const SEPARATOR: char = '\n';

#[derive(Clone)]
pub struct TokenKey([u8; 32]);

/// What a genuine token asks to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscription {
    pub stream: String,
    pub address: String,
    /// The tenant whose list the address goes on; `None` (every token made
    /// before tenants had lists, and tenant-less mail): the global one.
    pub tenant: Option<String>,
}

impl TokenKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        TokenKey(bytes)
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"herald-unsubscribe-v1\0");
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        full[..MAC_BYTES].try_into().expect("SHA-256 is 32 bytes")
    }

    /// A tenant-less token keeps the two-part payload of the links already
    /// in mailboxes, so those and new ones read the same.
    pub fn token(&self, stream: &str, address: &str, tenant: Option<&str>) -> String {
        let mut payload = format!("{stream}{SEPARATOR}{address}");
        if let Some(tenant) = tenant {
            payload.push(SEPARATOR);
            payload.push_str(tenant);
        }
        let mut bytes = payload.clone().into_bytes();
        bytes.extend_from_slice(&self.mac(payload.as_bytes()));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What a token was made for, if it is genuine.
    pub fn verify(&self, token: &str) -> Option<Unsubscription> {
        if token.len() > 1024 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() <= MAC_BYTES {
            return None;
        }
        let (payload, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut check = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        check.update(b"herald-unsubscribe-v1\0");
        check.update(payload);
        // Constant-time comparison of the truncated MAC.
        check.verify_truncated_left(mac).ok()?;
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.split(SEPARATOR);
        let stream = parts.next()?.to_owned();
        let address = parts.next()?.to_owned();
        let tenant = parts.next().map(str::to_owned);
        if parts.next().is_some() || tenant.as_deref().is_some_and(|t| !is_valid_tenant(t)) {
            return None;
        }
        Some(Unsubscription {
            stream,
            address,
            tenant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsubscription(stream: &str, address: &str, tenant: Option<&str>) -> Unsubscription {
        Unsubscription {
            stream: stream.into(),
            address: address.into(),
            tenant: tenant.map(Into::into),
        }
    }

    /// No variant of `token` with one character changed verifies.
    fn refuses_every_change(key: &TokenKey, token: &str) {
        for i in 0..token.len() {
            let mut chars: Vec<char> = token.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let altered: String = chars.into_iter().collect();
            if altered != token {
                assert_eq!(key.verify(&altered), None, "position {i}");
            }
        }
        assert_eq!(TokenKey::new([8; 32]).verify(token), None);
    }

    #[test]
    fn tokens_round_trip_and_refuse_any_change() {
        let key = TokenKey::new([7; 32]);
        let token = key.token("marketing", "bob@example.com", None);
        assert_eq!(
            key.verify(&token),
            Some(unsubscription("marketing", "bob@example.com", None))
        );
        refuses_every_change(&key, &token);
        let other = key.token("transactional", "bob@example.com", None);
        assert_ne!(other, token);
        assert_eq!(key.verify(""), None);
        assert_eq!(key.verify("!!"), None);
    }

    #[test]
    fn tenant_tokens_round_trip_and_refuse_any_change() {
        let key = TokenKey::new([7; 32]);
        let token = key.token("marketing", "bob@example.com", Some("org_123"));
        assert_eq!(
            key.verify(&token),
            Some(unsubscription(
                "marketing",
                "bob@example.com",
                Some("org_123")
            ))
        );
        refuses_every_change(&key, &token);
        let tenant_less = key.token("marketing", "bob@example.com", None);
        let other_tenant = key.token("marketing", "bob@example.com", Some("org_124"));
        assert_ne!(token, tenant_less);
        assert_ne!(token, other_tenant);
        // Cut back to two parts, a tenant's link cannot empty the global list.
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let (payload, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        let cut = payload.len() - "\norg_123".len();
        let mut truncated = payload[..cut].to_vec();
        truncated.extend_from_slice(mac);
        assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(truncated)), None);
    }

    /// Links sent before tenants had lists: "stream\naddress" and its MAC,
    /// built here by hand as the old code did.
    #[test]
    fn two_part_tokens_already_sent_still_mean_the_global_list() {
        let key = TokenKey::new([7; 32]);
        let payload = b"marketing\nbob@example.com";
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&key.mac(payload));
        let sent = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(sent, key.token("marketing", "bob@example.com", None));
        assert_eq!(
            key.verify(&sent),
            Some(unsubscription("marketing", "bob@example.com", None))
        );
    }

    #[test]
    fn signed_payloads_of_another_shape_are_refused() {
        let key = TokenKey::new([7; 32]);
        for payload in [
            &b"marketing"[..],
            b"marketing\nbob@example.com\norg_1\nmore",
            b"marketing\nbob@example.com\n",
        ] {
            let mut bytes = payload.to_vec();
            bytes.extend_from_slice(&key.mac(payload));
            assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(bytes)), None);
        }
    }
}

//! Public identifiers: a type prefix plus 26 Crockford base32 characters of a
//! 128-bit UUIDv7, so ids sort by creation time and are safe in URLs.

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ENCODED_LEN: usize = 26;

/// A fresh time-ordered 128-bit id.
pub fn new_id() -> u128 {
    uuid::Uuid::now_v7().as_u128()
}

/// A random number in [0, 1], for jitter: the random bits of a fresh id.
pub fn random_unit() -> f64 {
    f64::from(new_id() as u32) / f64::from(u32::MAX)
}

pub fn format(prefix: &str, id: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + ENCODED_LEN);
    out.push_str(prefix);
    // 26 characters × 5 bits = 130 bits: the top character carries 3 bits.
    for i in (0..ENCODED_LEN).rev() {
        let digit = ((id >> (i * 5)) & 0x1f) as usize;
        out.push(ALPHABET[digit] as char);
    }
    out
}

/// Parses an id written by `format` with the same prefix. Case-insensitive,
/// as Crockford base32 is meant to be.
pub fn parse(prefix: &str, text: &str) -> Option<u128> {
    let body = text.strip_prefix(prefix)?;
    if body.len() != ENCODED_LEN {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in body.bytes().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c.to_ascii_lowercase())? as u128;
        if i == 0 && digit > 7 {
            return None;
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// A dense sequential id (deliveries, messages: table keys) as `prefix`
/// and 16 hex digits, such as `dlv_000000000000002a`.
pub fn format_seq(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:016x}")
}

/// Parses an id written by `format_seq` with the same prefix; 0 is never
/// an id.
pub fn parse_seq(prefix: &str, text: &str) -> Option<u64> {
    let hex = text.strip_prefix(prefix)?;
    // `from_str_radix` also takes a leading `+`: two spellings of one id.
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_by_time() {
        for id in [0, 1, u128::MAX, new_id()] {
            let text = format("evt_", id);
            assert_eq!(text.len(), 4 + ENCODED_LEN);
            assert_eq!(parse("evt_", &text), Some(id));
            assert_eq!(
                parse("evt_", &text.to_uppercase().replace("EVT_", "evt_")),
                Some(id)
            );
        }
        let a = format("evt_", new_id());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = format("evt_", new_id());
        assert!(a < b);
    }

    #[test]
    fn rejects_foreign_text() {
        let good = format("evt_", 12345);
        for bad in [
            "",
            "evt_",
            "dlv_00000000000000000000000000",
            &good[..good.len() - 1],
            "evt_8zzzzzzzzzzzzzzzzzzzzzzzzz",
            "evt_0000000000000000000000000u",
        ] {
            assert_eq!(parse("evt_", bad), None, "{bad}");
        }
    }

    #[test]
    fn sequential_ids_are_exactly_sixteen_hex_digits() {
        assert_eq!(parse_seq("dlv_", "dlv_000000000000002a"), Some(42));
        assert_eq!(parse_seq("dlv_", "dlv_000000000000002A"), Some(42));
        for bad in [
            "dlv_+00000000000002a",
            "dlv_-00000000000002a",
            "dlv_0000000000000000",
            "dlv_00000000000002a",
            "msg_000000000000002a",
        ] {
            assert_eq!(parse_seq("dlv_", bad), None, "{bad}");
        }
    }
}

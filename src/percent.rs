//! Percent-decoding of URL parts: path segments (addresses, user ids) and
//! the credentials in a relay URL. `+` stays a plus: it is not a space
//! outside query strings, and addresses use it.

/// The decoded text, or `None` for a broken escape or bytes that are not
/// UTF-8.
pub fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn escapes_decode_and_broken_ones_are_refused() {
        assert_eq!(decode("a%40b.com").as_deref(), Some("a@b.com"));
        assert_eq!(decode("a+b&c=d").as_deref(), Some("a+b&c=d"));
        assert_eq!(decode("%C3%A9").as_deref(), Some("é"));
        for bad in ["%", "%4", "%zz", "%FF", "%é"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}

//! Comparing secrets (API keys, write keys, signatures) without leaking
//! through timing how much of a guess matched.

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(super::eq(b"secret", b"secret"));
        assert!(!super::eq(b"secret", b"secreT"));
        assert!(!super::eq(b"secret", b"secret!"));
        assert!(super::eq(b"", b""));
    }
}

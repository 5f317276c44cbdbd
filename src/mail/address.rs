//! Email addresses as Herald accepts them: a deliberately plain subset of
//! RFC 5321 (dot-atom local part, DNS domain), normalised to lowercase so the
//! suppression list has one spelling per mailbox.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is not an email address like name@example.com")]
    Malformed,
    #[error("contains a line break or control character")]
    ControlCharacter,
    #[error("is longer than 254 characters")]
    TooLong,
}

/// A mailbox with an optional display name, as in `Acme <no-reply@acme.com>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    /// Normalised (lowercase) address.
    pub address: String,
}

impl Mailbox {
    pub fn domain(&self) -> &str {
        domain_of(&self.address)
    }

    /// The form written into headers; the display name is quoted by the
    /// message builder.
    pub fn to_lettre(&self) -> Result<lettre::message::Mailbox, AddressError> {
        let address = self
            .address
            .parse::<lettre::Address>()
            .map_err(|_| AddressError::Malformed)?;
        Ok(lettre::message::Mailbox::new(self.name.clone(), address))
    }

    pub fn display(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} <{}>", self.address),
            None => self.address.clone(),
        }
    }
}

/// Any character that could end a header line or smuggle one in.
pub fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\t')
}

pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

pub fn is_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_local_part(local: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b))
        })
}

/// Trims and lowercases a bare address, refusing anything that is not one.
pub fn normalize(input: &str) -> Result<String, AddressError> {
    if has_control(input) {
        return Err(AddressError::ControlCharacter);
    }
    let address = input.trim().to_ascii_lowercase();
    if address.len() > 254 {
        return Err(AddressError::TooLong);
    }
    let (local, domain) = address.rsplit_once('@').ok_or(AddressError::Malformed)?;
    if !is_local_part(local) || !is_domain(domain) {
        return Err(AddressError::Malformed);
    }
    Ok(address)
}

/// Parses `addr` or `Display Name <addr>`.
pub fn parse_mailbox(input: &str) -> Result<Mailbox, AddressError> {
    if has_control(input) {
        return Err(AddressError::ControlCharacter);
    }
    let text = input.trim();
    match text.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
        Some((name, address)) => {
            let name = name.trim().trim_matches('"').trim();
            if name.contains(['<', '>', '"']) {
                return Err(AddressError::Malformed);
            }
            Ok(Mailbox {
                name: (!name.is_empty()).then(|| name.to_owned()),
                address: normalize(address)?,
            })
        }
        None => Ok(Mailbox {
            name: None,
            address: normalize(text)?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lowercased() {
        assert_eq!(normalize("  Bob@Example.COM ").unwrap(), "bob@example.com");
        assert_eq!(
            normalize("a.b+tag@sub.example.io").unwrap(),
            "a.b+tag@sub.example.io"
        );
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "bob@localhost",
            "bob@@example.com",
            "bo b@example.com",
            "bob@exa_mple.com",
            ".bob@example.com",
            "bob..x@example.com",
            "bob@-example.com",
            "\"bob\"@example.com",
        ] {
            assert_eq!(normalize(bad), Err(AddressError::Malformed), "{bad:?}");
        }
        assert_eq!(
            normalize("bob@example.com\r\nBcc: x@y.com"),
            Err(AddressError::ControlCharacter)
        );
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(normalize(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn display_names_are_kept_apart_from_the_address() {
        let m = parse_mailbox("Acme Billing <Billing@Acme.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Acme Billing"));
        assert_eq!(m.address, "billing@acme.com");
        assert_eq!(m.domain(), "acme.com");
        let m = parse_mailbox("\"Acme, Inc\" <a@acme.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Acme, Inc"));
        assert!(parse_mailbox("x <a@acme.com").is_err());
        assert!(parse_mailbox("x\n <a@acme.com>").is_err());
        assert!(parse_mailbox("<a@acme.com>").unwrap().name.is_none());
    }
}

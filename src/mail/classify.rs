//! What an SMTP reply means for a message and its recipient, following the
//! basic and enhanced status codes (RFC 5321, RFC 3463).

/// The relay's verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the relay took responsibility for the message.
    Accepted,
    /// 4xx (or 5.2.2, mailbox full): try again later; counts as a soft
    /// bounce of the recipient.
    SoftBounce,
    /// No reply at all (connection, TLS, timeout): try again later; says
    /// nothing about the recipient.
    Unreachable,
    /// The mailbox does not exist or is disabled: suppress it, never retry.
    HardBounce,
    /// 5.7.x: our side is refused (policy, authentication, reputation). The
    /// recipient is fine; an operator needs to look.
    SenderProblem,
    /// Any other 5xx: this message fails; the address is kept.
    Rejected,
}

/// An enhanced status code `class.subject.detail` at the start of a reply's
/// text, as in `5.1.1 User unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl std::fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

pub fn enhanced_code(text: &str) -> Option<EnhancedCode> {
    let first = text.split_whitespace().next()?;
    let mut parts = first.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
        return None;
    }
    Some(EnhancedCode {
        class,
        subject,
        detail,
    })
}

/// The verdict on an attempt. A reply that is not about the recipient (to
/// the session or to MAIL FROM) can only delay the message or flag our
/// side: it never counts against the address.
pub fn verdict(code: u16, text: &str, about_recipient: bool) -> Verdict {
    match code {
        0 => Verdict::Unreachable,
        _ if about_recipient => classify(code, text),
        500..=599 => Verdict::SenderProblem,
        _ => Verdict::Unreachable,
    }
}

pub fn classify(code: u16, text: &str) -> Verdict {
    let enhanced = enhanced_code(text);
    match code {
        200..=299 => Verdict::Accepted,
        400..=499 => Verdict::SoftBounce,
        500..=599 => match enhanced {
            // Mailbox full is a temporary state of an existing mailbox.
            Some(EnhancedCode {
                subject: 2,
                detail: 2,
                ..
            }) => Verdict::SoftBounce,
            // Bad sender address syntax or domain: ours, not the recipient's.
            Some(EnhancedCode {
                subject: 1,
                detail: 7 | 8,
                ..
            }) => Verdict::SenderProblem,
            // Bad address (5.1.x) or disabled mailbox (5.2.1).
            Some(EnhancedCode { subject: 1, .. })
            | Some(EnhancedCode {
                subject: 2,
                detail: 1,
                ..
            }) => Verdict::HardBounce,
            Some(EnhancedCode { subject: 7, .. }) => Verdict::SenderProblem,
            // Without an enhanced code a 5xx does not say whether the
            // mailbox or the message is at fault: never suppress on a guess.
            _ => Verdict::Rejected,
        },
        _ => Verdict::Unreachable,
    }
}

/// The relay's own id for an accepted message, as its 250 reply names it
/// (`250 Ok 0100018c…` from SES, `250 Ok: queued as CZpq…` from SendGrid):
/// the reply's last word, if it looks like an id. ESP feedback that echoes
/// none of our headers still names this id.
pub fn queued_as(text: &str) -> Option<String> {
    let last = text.split_whitespace().last()?;
    let id = last.trim_matches(|c| matches!(c, '<' | '>' | '[' | ']' | '(' | ')' | ',' | ';'));
    let plausible = (8..=200).contains(&id.len())
        && id.bytes().any(|b| b.is_ascii_digit())
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'=' | b'+' | b'/')
        });
    plausible.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_by_basic_and_enhanced_code() {
        assert_eq!(classify(250, "2.0.0 Ok: queued as ABC"), Verdict::Accepted);
        assert_eq!(classify(450, "4.2.0 try later"), Verdict::SoftBounce);
        assert_eq!(classify(421, "service not available"), Verdict::SoftBounce);
        assert_eq!(classify(550, "5.1.1 no such user"), Verdict::HardBounce);
        assert_eq!(classify(550, "5.1.10 null MX"), Verdict::HardBounce);
        assert_eq!(classify(550, "5.2.1 mailbox disabled"), Verdict::HardBounce);
        assert_eq!(classify(552, "5.2.2 mailbox full"), Verdict::SoftBounce);
        assert_eq!(
            classify(550, "5.7.1 relaying denied"),
            Verdict::SenderProblem
        );
        assert_eq!(classify(554, "5.7.26 DMARC"), Verdict::SenderProblem);
        assert_eq!(classify(552, "5.3.4 message too big"), Verdict::Rejected);
        assert_eq!(classify(550, "mailbox unavailable"), Verdict::Rejected);
        assert_eq!(classify(554, "transaction failed"), Verdict::Rejected);
        assert_eq!(classify(0, ""), Verdict::Unreachable);
        assert_eq!(
            classify(553, "5.1.8 sender domain not found"),
            Verdict::SenderProblem
        );
        assert_eq!(
            classify(550, "5.1.7 bad sender syntax"),
            Verdict::SenderProblem
        );
    }

    #[test]
    fn session_and_sender_replies_never_count_against_the_recipient() {
        assert_eq!(
            verdict(421, "4.3.2 not available", false),
            Verdict::Unreachable
        );
        assert_eq!(
            verdict(550, "5.1.1 no such user", false),
            Verdict::SenderProblem
        );
        assert_eq!(
            verdict(535, "5.7.8 bad credentials", false),
            Verdict::SenderProblem
        );
        assert_eq!(
            verdict(550, "5.1.1 no such user", true),
            Verdict::HardBounce
        );
        assert_eq!(verdict(0, "", true), Verdict::Unreachable);
    }

    #[test]
    fn enhanced_codes_are_read_only_from_the_first_word() {
        assert_eq!(enhanced_code("5.1.1 x").unwrap().to_string(), "5.1.1");
        assert!(enhanced_code("user 5.1.1").is_none());
        assert!(enhanced_code("5.1 x").is_none());
        assert!(enhanced_code("3.1.1 x").is_none());
        assert!(enhanced_code("5.1.1.1 x").is_none());
    }

    #[test]
    fn the_relays_id_is_taken_from_its_accepting_reply() {
        assert_eq!(
            queued_as("Ok 0100018c7ab8d2c4-6f1c-4b8e-9d7a-000000").as_deref(),
            Some("0100018c7ab8d2c4-6f1c-4b8e-9d7a-000000")
        );
        assert_eq!(
            queued_as("2.0.0 Ok: queued as <CZpqWwTDS7eL_l2obQ-9qw>").as_deref(),
            Some("CZpqWwTDS7eL_l2obQ-9qw")
        );
        assert_eq!(queued_as("2.0.0 Great success"), None);
        assert_eq!(queued_as(""), None);
    }
}

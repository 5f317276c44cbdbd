//! Endpoint URLs taken apart for sending: only http(s), no credentials,
//! hosts written one way only, so every reader of the URL agrees on where
//! it points.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hyper::Uri;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An endpoint URL taken apart for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower-case host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path_and_query: String,
}

impl Target {
    pub fn literal_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://host[:port]`: for messages and logs, which should not
    /// repeat a token the endpoint put in its query string.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path_and_query
        )
    }
}

/// Checks an endpoint URL and takes it apart; the message says what to fix.
pub fn parse(url: &str, require_https: bool) -> Result<Target, String> {
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the URL contains spaces or control characters; percent-encode them".into());
    }
    if !url.is_ascii() {
        return Err(
            "the URL contains non-ASCII characters; percent-encode the path and write the host in its xn-- form"
                .into(),
        );
    }
    if url.contains('\\') {
        // Browsers read `\` as `/` and other parsers do not; refusing it keeps
        // every reader of the URL agreeing on the host.
        return Err("the URL contains a backslash; use `/` or percent-encode it".into());
    }
    let (scheme_text, rest) = url
        .split_once("://")
        .ok_or("the URL must start with https:// or http://")?;
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => {
            return Err(format!(
                "`{scheme_text}://` is not supported; use https:// or http://"
            ))
        }
    };
    if require_https && scheme == Scheme::Http {
        return Err("the URL must use https:// (plain http is turned off)".into());
    }
    if rest.contains('#') {
        return Err("the URL must not have a #fragment; it is never sent".into());
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(
            "the URL must not carry credentials (user:password@); send them in a header instead"
                .into(),
        );
    }
    let (host, port) = split_host_port(authority, scheme)?;
    let path_and_query = match path_and_query.chars().next() {
        None => "/".to_owned(),
        Some('?') => format!("/{path_and_query}"),
        Some(_) => path_and_query.to_owned(),
    };
    if Uri::try_from(path_and_query.as_str()).is_err() {
        return Err(format!(
            "the path `{path_and_query}` is not valid in a URL; percent-encode it"
        ));
    }
    Ok(Target {
        scheme,
        host,
        port,
        path_and_query,
    })
}

fn split_host_port(authority: &str, scheme: Scheme) -> Result<(String, u16), String> {
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("the URL's IPv6 address is missing its closing `]`")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("`[{inside}]` is not an IPv6 address"))?;
        let port_text = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{after}` after the IPv6 address"))?,
            ),
        };
        (ip.to_string(), port_text)
    } else {
        let (host, port_text) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if port_text.is_some_and(|p| p.contains(':')) {
            return Err(
                "an IPv6 address in a URL must be written in brackets: http://[::1]/".into(),
            );
        }
        (checked_host_name(host)?, port_text)
    };
    let port = match port_text {
        None => scheme.default_port(),
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("`{text}` is not a port number (1-65535)"))?,
    };
    Ok((host, port))
}

fn checked_host_name(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let host = host.to_ascii_lowercase();
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    let labels_text = host.strip_suffix('.').unwrap_or(&host);
    if labels_text.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    let labels: Vec<&str> = labels_text.split('.').collect();
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!("`{host}` is not a valid host name"));
        }
    }
    // Resolvers read `127.1`, `2130706433` and `0x7f.1` as IPv4 addresses;
    // only the dotted-quad form is accepted, so the URL means one thing.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(format!(
            "`{host}` is not a valid IPv4 address; write all four parts, e.g. 192.0.2.1"
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_taken_apart() {
        let t = parse("HTTPS://Hooks.Example.COM/in?x=1&y=2", true).unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(t.host, "hooks.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(t.path_and_query, "/in?x=1&y=2");
        assert_eq!(t.authority(), "hooks.example.com");
        assert_eq!(t.to_string(), "https://hooks.example.com/in?x=1&y=2");

        let t = parse("http://example.com", false).unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/"));
        let t = parse("http://example.com?q", false).unwrap();
        assert_eq!(t.path_and_query, "/?q");
        let t = parse("http://[::1]:8080/a", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority(), "[::1]:8080");
        let t = parse("http://127.0.0.1:3000/h", false).unwrap();
        assert_eq!(t.authority(), "127.0.0.1:3000");
        let t = parse("https://example.com:443/", false).unwrap();
        assert_eq!(t.authority(), "example.com");
        let t = parse("http://my_host.internal./", false).unwrap();
        assert_eq!(t.host, "my_host.internal.");
    }

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        let cases = [
            ("ftp://example.com/", "not supported"),
            ("example.com/hook", "must start with https://"),
            ("https://user:pass@example.com/", "credentials"),
            ("https://token@example.com/", "credentials"),
            ("http://example.com/", "must use https://"),
            ("https://example.com/#top", "fragment"),
            ("https:///path", "no host"),
            ("https://:443/", "no host"),
            ("https://exa mple.com/", "spaces"),
            ("https://example.com/\n", "control"),
            ("https://exämple.com/", "non-ASCII"),
            ("https://example.com\\@evil.com/", "backslash"),
            ("https://example.com:0/", "not a port"),
            ("https://example.com:65536/", "not a port"),
            ("https://example.com:+80/", "not a port"),
            ("https://example.com:/", "not a port"),
            ("https://::1/", "brackets"),
            ("https://[::1/", "closing"),
            ("https://[nope]/", "not an IPv6 address"),
            ("https://[::1]x/", "unexpected"),
            ("https://127.1/", "IPv4"),
            ("https://2130706433/", "IPv4"),
            ("https://0x7f000001/", "IPv4"),
            ("https://a..b/", "not a valid host name"),
            ("https://-bad!.com/", "not a valid host name"),
        ];
        for (url, reason) in cases {
            let error = parse(url, true).unwrap_err();
            assert!(error.contains(reason), "{url}: {error}");
        }
        assert!(parse("http://example.com/", false).is_ok());
    }
}

//! Which IP addresses webhooks may be sent to: public ones, plus an operator's allow-list of networks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Whether `ip` is an ordinary public unicast address: false for private,
/// loopback, link-local (cloud metadata at 169.254.169.254), shared,
/// documentation, benchmarking, multicast and reserved ranges, and for IPv6
/// forms that carry or translate to an IPv4 address that is not itself public.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let not_global = a == 0
        || a == 10
        || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 168)
        || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !not_global
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    let s = ip.segments();
    // Only 2000::/3 is allocated for global unicast. Everything outside it is
    // local or special: ::/96 (unspecified, loopback, IPv4-compatible),
    // 64:ff9b::/96 and 64:ff9b:1::/48 (NAT64, which would reach whatever IPv4
    // address is embedded, private ones included), 100::/64, fc00::/7,
    // fe80::/10, fec0::/10 and ff00::/8.
    if (s[0] & 0xe000) != 0x2000 {
        return false;
    }
    let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
    // Teredo hides the client's IPv4 address; nothing legitimate needs it.
    let teredo = s[0] == 0x2001 && s[1] == 0;
    let benchmarking = s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0;
    let orchid = s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010;
    if documentation || teredo || benchmarking || orchid {
        return false;
    }
    if s[0] == 0x2002 {
        // 6to4 relays deliver to the embedded IPv4 address.
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return is_global_v4(Ipv4Addr::new(a, b, c, d));
    }
    true
}

/// An IP network such as `10.0.0.0/8` or `::1/128`; a bare address is a
/// network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    NotAnAddress(String),
    #[error("`{0}` is not a prefix length")]
    NotAPrefixLength(String),
    #[error("prefix length {prefix_len} is longer than the {max} bits of the address")]
    PrefixTooLong { prefix_len: u32, max: u32 },
}

impl Cidr {
    /// The network holding `ip`'s first `prefix_len` bits; host bits are
    /// cleared, so `10.1.2.3/8` is `10.0.0.0/8`.
    pub fn new(ip: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = address_bits(ip);
        if u32::from(prefix_len) > max {
            return Err(CidrError::PrefixTooLong {
                prefix_len: u32::from(prefix_len),
                max,
            });
        }
        // A network written in the IPv4-mapped form matches the IPv4
        // addresses it maps, as `contains` compares IPv4 forms.
        let (ip, prefix_len) = match ip {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (ip, prefix_len),
            },
            _ => (ip, prefix_len),
        };
        Ok(Cidr {
            network: masked(ip, prefix_len),
            prefix_len,
        })
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are matched as the
    /// IPv4 address they carry, since that is where a connection to them goes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix_len) == self.network
    }
}

fn address_bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn masked(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len).min(32))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len).min(128))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = address
            .parse()
            .map_err(|_| CidrError::NotAnAddress(address.to_owned()))?;
        let prefix_len = match prefix {
            None => address_bits(ip),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u32>()
                .map_err(|_| CidrError::NotAPrefixLength(p.to_owned()))?,
            Some(p) => return Err(CidrError::NotAPrefixLength(p.to_owned())),
        };
        let max = address_bits(ip);
        let prefix_len = u8::try_from(prefix_len)
            .ok()
            .filter(|len| u32::from(*len) <= max)
            .ok_or(CidrError::PrefixTooLong { prefix_len, max })?;
        Cidr::new(ip, prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Where webhooks may go: every public address, and the networks an
/// operator opened on purpose (tests and on-premises receivers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow: Vec<Cidr>,
}

impl Policy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|cidr| cidr.contains(ip)) || is_global(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn every_non_global_ipv4_range_is_refused_at_both_ends() {
        let ranges = [
            ("0.0.0.0", "0.255.255.255"),
            ("10.0.0.0", "10.255.255.255"),
            ("100.64.0.0", "100.127.255.255"),
            ("127.0.0.0", "127.255.255.255"),
            ("169.254.0.0", "169.254.255.255"),
            ("172.16.0.0", "172.31.255.255"),
            ("192.0.0.0", "192.0.0.255"),
            ("192.0.2.0", "192.0.2.255"),
            ("192.168.0.0", "192.168.255.255"),
            ("198.18.0.0", "198.19.255.255"),
            ("198.51.100.0", "198.51.100.255"),
            ("203.0.113.0", "203.0.113.255"),
            ("224.0.0.0", "239.255.255.255"),
            ("240.0.0.0", "255.255.255.254"),
        ];
        for (first, last) in ranges {
            assert!(!is_global(ip(first)), "{first}");
            assert!(!is_global(ip(last)), "{last}");
        }
        for special in ["169.254.169.254", "255.255.255.255", "127.0.0.1", "0.0.0.0"] {
            assert!(!is_global(ip(special)), "{special}");
        }
    }

    #[test]
    fn neighbours_of_the_refused_ipv4_ranges_are_public() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
        ] {
            assert!(is_global(ip(public)), "{public}");
        }
    }

    #[test]
    fn every_non_global_ipv6_range_is_refused() {
        for address in [
            "::",
            "::1",
            "::7f00:1",    // IPv4-compatible 127.0.0.1
            "::5db8:d822", // IPv4-compatible, public, but deprecated
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "64:ff9b::a9fe:a9fe", // NAT64 to 169.254.169.254
            "64:ff9b::5db8:d822", // NAT64 to a public address: refused as well
            "64:ff9b:1::1",
            "100::1",
            "2001::1",           // Teredo
            "2001:2::1",         // benchmarking
            "2001:10::1",        // ORCHID
            "2002:7f00:1::1",    // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1", // 6to4 of 169.254.169.254
            "4000::1",
        ] {
            assert!(!is_global(ip(address)), "{address}");
        }
    }

    #[test]
    fn public_ipv6_addresses_are_permitted() {
        for address in [
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2002:5db8:d822::1", // 6to4 of a public address
        ] {
            assert!(is_global(ip(address)), "{address}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_judged_by_their_ipv4_address() {
        for refused in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!is_global(ip(refused)), "{refused}");
            assert!(!Policy::default().permits(ip(refused)), "{refused}");
        }
        assert!(is_global(ip("::ffff:93.184.216.34")));
    }

    #[test]
    fn default_policy_permits_public_and_refuses_metadata() {
        let policy = Policy::default();
        assert!(policy.permits(ip("93.184.216.34")));
        assert!(policy.permits(ip("2606:4700::1111")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!(!policy.permits(ip("127.0.0.1")));
        assert!(!policy.permits(ip("::1")));
    }

    #[test]
    fn allow_list_opens_exactly_its_networks() {
        let policy = Policy {
            allow: vec![cidr("127.0.0.1/32")],
        };
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("127.0.0.2")));
        assert!(!policy.permits(ip("::1")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!(policy.permits(ip("93.184.216.34")));
    }

    #[test]
    fn cidr_parsing_masks_host_bits_and_accepts_bare_addresses() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("::1/128").to_string(), "::1/128");
        assert_eq!(cidr("fd00::1/8").to_string(), "fd00::/8");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn cidr_contains_matches_the_network_only() {
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")));
        assert!(ten.contains(ip("10.255.255.255")));
        assert!(ten.contains(ip("::ffff:10.9.8.7")));
        assert!(!ten.contains(ip("11.0.0.0")));
        assert!(!ten.contains(ip("::a00:1")));
        let everything_v4 = cidr("0.0.0.0/0");
        assert!(everything_v4.contains(ip("203.0.113.9")));
        assert!(!everything_v4.contains(ip("2001:db8::1")));
        let ula = cidr("fc00::/7");
        assert!(ula.contains(ip("fdff::1")));
        assert!(!ula.contains(ip("fe00::1")));
        let mapped = cidr("::ffff:127.0.0.1/128");
        assert!(mapped.contains(ip("127.0.0.1")));
    }

    #[test]
    fn cidr_parsing_refuses_nonsense_with_clear_messages() {
        let too_long = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert_eq!(
            too_long,
            CidrError::PrefixTooLong {
                prefix_len: 33,
                max: 32
            }
        );
        assert!(too_long.to_string().contains("longer than the 32 bits"));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix_len: 129,
                max: 128
            })
        ));
        assert!(matches!(
            "10.0.0.0/999".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix_len: 999,
                ..
            })
        ));
        for bad_prefix in [
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "10.0.0.0/ 8",
        ] {
            assert!(
                matches!(
                    bad_prefix.parse::<Cidr>(),
                    Err(CidrError::NotAPrefixLength(_))
                ),
                "{bad_prefix}"
            );
        }
        for bad_address in [
            "",
            "localhost/32",
            "10.0.0/8",
            "10.0.0.256/32",
            " 10.0.0.0/8",
            "[::1]/128",
        ] {
            assert!(
                matches!(bad_address.parse::<Cidr>(), Err(CidrError::NotAnAddress(_))),
                "{bad_address}"
            );
        }
    }
}

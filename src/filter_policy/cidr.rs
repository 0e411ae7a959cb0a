//! `cidr` conditions: an IPv4 or IPv6 network and membership tests.

use std::net::IpAddr;

use crate::filter_policy::PolicyError;

/// An IP network, kept as the address bits and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    bits: u128,
    prefix: u8,
}

fn to_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x:y::z/n`, with SNS's error texts.
    pub fn parse(text: &str) -> Result<Cidr, PolicyError> {
        let Some((addr, mask)) = text.split_once('/') else {
            return Err(PolicyError::policy("Malformed CIDR, one '/' required"));
        };
        let prefix: u8 =
            mask.parse().map_err(|_| PolicyError::policy("Malformed CIDR, mask bits must be an integer"))?;
        let ip: IpAddr = addr.parse().map_err(|_| PolicyError::policy(format!("Nonstandard IP address: {addr}")))?;
        let (v6, bits) = to_bits(ip);
        let width = if v6 { 128 } else { 32 };
        if prefix > width {
            return Err(PolicyError::policy(format!("Malformed CIDR, mask bits must be between 0 and {width}")));
        }
        Ok(Cidr { v6, bits: bits & mask_of(prefix, width), prefix })
    }

    /// True when `ip` is inside the network (IPv4 never matches an IPv6 network and back).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, bits) = to_bits(ip);
        let width = if v6 { 128 } else { 32 };
        v6 == self.v6 && bits & mask_of(self.prefix, width) == self.bits
    }

    /// True when `text` is an IP address inside the network.
    pub fn contains_text(&self, text: &str) -> bool {
        text.parse::<IpAddr>().is_ok_and(|ip| self.contains(ip))
    }
}

/// The network mask of `prefix` leading ones in a `width`-bit address.
fn mask_of(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let all: u128 = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
    all & !((1u128 << (width - prefix)) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_membership() {
        let n = Cidr::parse("10.0.0.0/24").expect("valid");
        assert!(n.contains_text("10.0.0.255"));
        assert!(!n.contains_text("10.0.1.0"));
        assert!(!n.contains_text("not an ip"));
        assert!(Cidr::parse("0.0.0.0/0").expect("valid").contains_text("8.8.8.8"));
        assert!(Cidr::parse("1.2.3.4/32").expect("valid").contains_text("1.2.3.4"));
        let v6 = Cidr::parse("2001:db8::/32").expect("valid");
        assert!(v6.contains_text("2001:db8::1"));
        assert!(!v6.contains_text("2001:db9::1"));
        assert!(!v6.contains_text("10.0.0.1"));
        assert!(Cidr::parse("::/0").expect("valid").contains_text("::1"));
    }

    #[test]
    fn malformed_networks_have_sns_texts() {
        assert_eq!(Cidr::parse("10.0.0.0").unwrap_err().0, "FilterPolicy: Malformed CIDR, one '/' required");
        assert_eq!(
            Cidr::parse("10.0.0.0/x").unwrap_err().0,
            "FilterPolicy: Malformed CIDR, mask bits must be an integer"
        );
        assert_eq!(Cidr::parse("10.0.0/8").unwrap_err().0, "FilterPolicy: Nonstandard IP address: 10.0.0");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }
}

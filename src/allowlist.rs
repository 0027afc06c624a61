//! Per-token client allowlists: the networks a token may be used from. Pure: parsing what an
//! admin typed into canonical CIDR blocks, and checking a client address against them.
//!
//! IPv4, IPv6 and IPv4-mapped IPv6 (`::ffff:10.1.2.3`, how a dual-stack socket reports an
//! IPv4 client) are all handled: a mapped address is checked as the IPv4 address it carries,
//! and a mapped network (`::ffff:10.0.0.0/104`) is stored as the IPv4 network it covers.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// The most entries one token's list may hold.
pub const MAX_ENTRIES: usize = 64;

/// Why an allowlist was refused. Each message names the entry by its position, never echoing
/// it (it may be anything a caller pasted), and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    #[error(
        "allowed IP entry {0} is not an address or a CIDR block; accepted: 10.0.0.0/8, 192.0.2.7, 2001:db8::/32, ::1"
    )]
    Unparsable(usize),
    #[error(
        "allowed IP entry {index} has bits set past its prefix length; did you mean {network}?"
    )]
    HostBits { index: usize, network: String },
    #[error(
        "an allowlist of only 0.0.0.0/0 or ::/0 admits every address; list the networks the client uses, or give no allowlist for no restriction"
    )]
    CoversEverything,
    #[error("at most {MAX_ENTRIES} allowed IP entries, got {0}")]
    TooMany(usize),
}

/// Parse an admin's list into canonical, de-duplicated CIDR strings (sorted, so equal lists
/// compare equal). An empty input is an empty list: no restriction.
pub fn parse(entries: &[String]) -> Result<Vec<String>, AllowListError> {
    if entries.len() > MAX_ENTRIES {
        return Err(AllowListError::TooMany(entries.len()));
    }
    let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let index = i + 1;
        let raw = raw.trim();
        let net = match raw.parse::<IpNet>() {
            Ok(net) => {
                if net.trunc() != net {
                    return Err(AllowListError::HostBits {
                        index,
                        network: canonical(net.trunc()).to_string(),
                    });
                }
                net
            }
            Err(_) => match raw.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => return Err(AllowListError::Unparsable(index)),
            },
        };
        let net = canonical(net);
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    if !nets.is_empty() && nets.iter().all(|n| n.prefix_len() == 0) {
        return Err(AllowListError::CoversEverything);
    }
    nets.sort();
    Ok(nets.iter().map(IpNet::to_string).collect())
}

/// An IPv4-mapped IPv6 network as the IPv4 network it covers; anything else unchanged.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(v4) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4);
    }
    net
}

/// A client address as it is checked: a mapped IPv6 address is its IPv4 address.
fn client(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A token's stored list, parsed once for the authentication path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    nets: Box<[IpNet]>,
}

impl AllowList {
    /// The list of a stored row or event (canonical CIDR strings). An entry that no longer
    /// parses admits nothing rather than everything.
    pub fn from_stored<'a>(entries: impl IntoIterator<Item = &'a str>) -> Option<AllowList> {
        let nets: Box<[IpNet]> = entries
            .into_iter()
            .filter_map(|e| e.parse::<IpNet>().ok().map(canonical))
            .collect();
        let any = nets.len();
        (any > 0).then_some(AllowList { nets })
    }

    /// Whether a client at `ip` (as the request reported it) may use the token. An unknown
    /// or unparsable address is refused.
    pub fn admits(&self, ip: Option<&str>) -> bool {
        let Some(addr) = ip.and_then(|ip| ip.trim().parse::<IpAddr>().ok()) else {
            return false;
        };
        let addr = client(addr);
        self.nets.iter().any(|n| n.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<Vec<String>, AllowListError> {
        parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    fn admits(entries: &[&str], ip: &str) -> bool {
        let stored = list(entries).unwrap();
        AllowList::from_stored(stored.iter().map(String::as_str))
            .unwrap()
            .admits(Some(ip))
    }

    #[test]
    fn ipv4_blocks_and_single_addresses_admit_what_they_cover() {
        assert!(admits(&["10.0.0.0/8"], "10.200.3.4"));
        assert!(!admits(&["10.0.0.0/8"], "11.0.0.1"));
        assert!(admits(&["192.0.2.7"], "192.0.2.7"));
        assert!(!admits(&["192.0.2.7"], "192.0.2.8"));
    }

    #[test]
    fn ipv6_blocks_admit_what_they_cover() {
        assert!(admits(&["2001:db8::/32"], "2001:db8:1::5"));
        assert!(!admits(&["2001:db8::/32"], "2001:db9::1"));
        assert!(!admits(&["2001:db8::/32"], "10.0.0.1"));
        assert!(admits(&["::1"], "::1"));
    }

    #[test]
    fn ipv4_mapped_ipv6_clients_and_networks_are_their_ipv4_form() {
        assert!(admits(&["10.0.0.0/8"], "::ffff:10.1.2.3"));
        assert!(!admits(&["10.0.0.0/8"], "::ffff:11.1.2.3"));
        assert_eq!(list(&["::ffff:10.0.0.0/104"]).unwrap(), ["10.0.0.0/8"]);
        assert!(admits(&["::ffff:10.0.0.0/104"], "10.9.9.9"));
        assert!(admits(&["::ffff:192.0.2.7"], "192.0.2.7"));
    }

    #[test]
    fn lists_are_canonical_and_deduplicated() {
        assert_eq!(
            list(&[" 192.0.2.7 ", "10.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"]).unwrap(),
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
        );
        assert_eq!(list(&[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn bad_entries_are_refused_by_position_without_echo() {
        let e = list(&["10.0.0.0/8", "nonsense\u{1b}[31m"]).unwrap_err();
        assert_eq!(e, AllowListError::Unparsable(2));
        assert!(!e.to_string().contains("nonsense"));
        assert_eq!(
            list(&["10.0.0.0/33"]).unwrap_err(),
            AllowListError::Unparsable(1)
        );
        assert_eq!(
            list(&["10.1.2.3/8"]).unwrap_err().to_string(),
            "allowed IP entry 1 has bits set past its prefix length; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            list(&["0.0.0.0/0"]).unwrap_err(),
            AllowListError::CoversEverything
        );
        assert_eq!(
            list(&["0.0.0.0/0", "::/0"]).unwrap_err(),
            AllowListError::CoversEverything
        );
        assert!(list(&["0.0.0.0/0", "2001:db8::/32"]).is_ok());
        let many: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(parse(&many).unwrap_err(), AllowListError::TooMany(65));
    }

    #[test]
    fn an_unknown_or_unparsable_client_address_is_refused() {
        let stored = list(&["10.0.0.0/8"]).unwrap();
        let allow = AllowList::from_stored(stored.iter().map(String::as_str)).unwrap();
        assert!(!allow.admits(None));
        assert!(!allow.admits(Some("unknown")));
        assert!(AllowList::from_stored([]).is_none());
    }
}

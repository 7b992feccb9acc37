//! `.allexlanmanager/subnets`: which addresses masters may connect from.

use crate::error::FileError;
use crate::located::{error_at, parse_array};
use crate::need::parse_ipaddress;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The ranges of the subnets file; a master outside all of them is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets(pub Vec<IpNet>);

impl Subnets {
    /// Parses the file's text: a JSON array of addresses or CIDR ranges,
    /// each fault located by `file:line:column`.
    pub fn parse(path: &Path, text: &str) -> Result<Subnets, FileError> {
        let items: Vec<(usize, String)> = parse_array(path, text)?;
        let mut nets = Vec::with_capacity(items.len());
        for (offset, item) in items {
            let net = parse_ipaddress(&item).map_err(|_| {
                error_at(
                    path,
                    text,
                    offset,
                    format!("{item:?} is neither an IP address nor a CIDR range"),
                )
            })?;
            nets.push(net);
        }
        Ok(Subnets(nets))
    }

    /// Whether a connection from `peer` may speak for a master: inside one of
    /// the ranges, or from 127.0.0.1, which is always allowed.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        peer == IpAddr::V4(Ipv4Addr::LOCALHOST) || self.0.iter().any(|n| n.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_loopback_are_allowed_and_faults_located() {
        let s = Subnets::parse(Path::new("subnets"), r#"["10.0.0.0/8", "192.168.1.7"]"#).unwrap();
        assert!(s.allows("10.9.8.7".parse().unwrap()));
        assert!(s.allows("192.168.1.7".parse().unwrap()));
        assert!(!s.allows("192.168.1.8".parse().unwrap()));
        assert!(s.allows("127.0.0.1".parse().unwrap()));
        assert!(s.allows("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!Subnets(Vec::new()).allows("127.0.0.2".parse().unwrap()));
        let e =
            Subnets::parse(Path::new("subnets"), "[\n \"10.0.0.0/8\",\n \"nope\"]").unwrap_err();
        assert_eq!((e.line, e.column), (3, 2), "{e}");
        assert!(Subnets::parse(Path::new("subnets"), "{}").is_err());
    }
}

//! One value per protocol: the map type behind ports, port counts, range
//! starts and a master's per-protocol state.
//!
//! The wire keeps its own structs ([`Ports`], [`PortCounts`],
//! [`PortStarts`]), whose schemas are committed and documented field by
//! field; they convert to and from this map, and their `get` goes through
//! it, so there is one place that knows which field a protocol is.

use crate::config::PortStarts;
use crate::types::{PortCounts, Ports, Protocol};
use std::ops::{Index, IndexMut};

/// A `T` for each of tcp, http and ws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PerProtocol<T> {
    /// For TCP.
    pub tcp: T,
    /// For HTTP.
    pub http: T,
    /// For WebSocket.
    pub ws: T,
}

impl<T> PerProtocol<T> {
    /// The map whose value for `p` is `f(p)`.
    pub fn from_fn(mut f: impl FnMut(Protocol) -> T) -> PerProtocol<T> {
        PerProtocol {
            tcp: f(Protocol::Tcp),
            http: f(Protocol::Http),
            ws: f(Protocol::Ws),
        }
    }

    /// Each protocol with its value, in [`Protocol::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, &T)> + '_ {
        Protocol::ALL.into_iter().map(move |p| (p, &self[p]))
    }

    /// The map of `f(protocol, value)`.
    pub fn map<U>(self, mut f: impl FnMut(Protocol, T) -> U) -> PerProtocol<U> {
        PerProtocol {
            tcp: f(Protocol::Tcp, self.tcp),
            http: f(Protocol::Http, self.http),
            ws: f(Protocol::Ws, self.ws),
        }
    }
}

impl<T> Index<Protocol> for PerProtocol<T> {
    type Output = T;

    fn index(&self, p: Protocol) -> &T {
        match p {
            Protocol::Tcp => &self.tcp,
            Protocol::Http => &self.http,
            Protocol::Ws => &self.ws,
        }
    }
}

impl<T> IndexMut<Protocol> for PerProtocol<T> {
    fn index_mut(&mut self, p: Protocol) -> &mut T {
        match p {
            Protocol::Tcp => &mut self.tcp,
            Protocol::Http => &mut self.http,
            Protocol::Ws => &mut self.ws,
        }
    }
}

impl From<Ports> for PerProtocol<Option<u16>> {
    fn from(p: Ports) -> Self {
        PerProtocol {
            tcp: p.tcp,
            http: p.http,
            ws: p.ws,
        }
    }
}

impl From<PerProtocol<Option<u16>>> for Ports {
    fn from(p: PerProtocol<Option<u16>>) -> Self {
        Ports {
            tcp: p.tcp,
            http: p.http,
            ws: p.ws,
        }
    }
}

impl From<PortCounts> for PerProtocol<u32> {
    fn from(c: PortCounts) -> Self {
        PerProtocol {
            tcp: c.tcp,
            http: c.http,
            ws: c.ws,
        }
    }
}

impl From<PerProtocol<u32>> for PortCounts {
    fn from(c: PerProtocol<u32>) -> Self {
        PortCounts {
            tcp: c.tcp,
            http: c.http,
            ws: c.ws,
        }
    }
}

impl From<PortStarts> for PerProtocol<u16> {
    fn from(s: PortStarts) -> Self {
        PerProtocol {
            tcp: s.tcp,
            http: s.http,
            ws: s.ws,
        }
    }
}

impl From<PerProtocol<u16>> for PortStarts {
    fn from(s: PerProtocol<u16>) -> Self {
        PortStarts {
            tcp: s.tcp,
            http: s.http,
            ws: s.ws,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_struct_round_trips_and_indexes_the_field_of_its_protocol() {
        let ports = Ports {
            tcp: Some(1),
            http: None,
            ws: Some(3),
        };
        let map = PerProtocol::from(ports);
        assert_eq!(Ports::from(map), ports);
        for p in Protocol::ALL {
            assert_eq!(map[p], ports.get(p));
        }
        let counts = PortCounts {
            tcp: 4,
            http: 5,
            ws: 6,
        };
        assert_eq!(PortCounts::from(PerProtocol::from(counts)), counts);
        let starts = PortStarts {
            tcp: 7,
            http: 8,
            ws: 9,
        };
        let m = PerProtocol::from(starts);
        assert_eq!(PortStarts::from(m), starts);
        assert_eq!(
            m.iter().map(|(p, v)| (p, *v)).collect::<Vec<_>>(),
            vec![(Protocol::Tcp, 7), (Protocol::Http, 8), (Protocol::Ws, 9)]
        );
        assert_eq!(m.map(|_, v| v * 2)[Protocol::Ws], 18);
        let mut b = PerProtocol::from_fn(|p| p == Protocol::Http);
        b[Protocol::Tcp] = true;
        assert_eq!((b.tcp, b.http, b.ws), (true, true, false));
    }
}

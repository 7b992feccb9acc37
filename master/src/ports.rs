//! The port office: hands out one port per protocol from the configured ranges.
//!
//! A port is free when no live child (or pending claim) of this master holds it
//! and it can be bound right now. The bind probe uses the wildcard address:
//! services bind `0.0.0.0`, which fails if anything listens on the port at any
//! address, so the wildcard probe is the check that predicts the child's bind.

use allex_protocol::{MasterConfig, PerProtocol, PortCounts, Ports, Protocol};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Why ports could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Every port of a protocol's range is held or taken by another process.
    #[error("the {protocol} port range {start}..={end} is exhausted")]
    Exhausted {
        /// The exhausted protocol.
        protocol: Protocol,
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
    /// The need pins a port outside this master's range for the protocol.
    #[error("the need pins {protocol} port {port}, outside this master's {protocol} range {start}..={end}")]
    PinnedOutside {
        /// The protocol.
        protocol: Protocol,
        /// The pinned port.
        port: u16,
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
    /// The pinned port is held by one of this master's children or cannot be bound now.
    #[error("the need pins {protocol} port {port}, which is {why}")]
    PinnedTaken {
        /// The protocol.
        protocol: Protocol,
        /// The pinned port.
        port: u16,
        /// Held here or bound by another process.
        why: &'static str,
    },
}

/// Decides whether a port can be bound right now (injectable for tests).
pub type Probe = Box<dyn Fn(Protocol, u16) -> bool + Send>;

/// A probe that binds the port on the wildcard address and lets it go.
pub fn bind_probe() -> Probe {
    Box::new(|_, port| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).is_ok())
}

struct Range {
    start: u16,
    held: Vec<bool>,
    held_count: usize,
}

/// Per-protocol port ranges and which ports this master holds.
pub struct PortOffice {
    ranges: PerProtocol<Range>,
    probe: Probe,
}

impl PortOffice {
    /// An office over `size` ports from each protocol's start.
    pub fn new(starts: PerProtocol<u16>, size: u16, probe: Probe) -> PortOffice {
        PortOffice {
            ranges: starts.map(|_, start| Range {
                start,
                held: vec![false; usize::from(size)],
                held_count: 0,
            }),
            probe,
        }
    }

    /// The office described by a master config, probing by bind.
    pub fn from_config(cfg: &MasterConfig) -> PortOffice {
        PortOffice::new(cfg.portrangestart.into(), cfg.portrangesize, bind_probe())
    }

    fn find(&self, p: Protocol) -> Result<u16, PortError> {
        let r = &self.ranges[p];
        for (i, held) in r.held.iter().enumerate() {
            if *held {
                continue;
            }
            // The config check keeps every range inside 1..=65535.
            let Ok(port) = u16::try_from(usize::from(r.start) + i) else {
                break;
            };
            if (self.probe)(p, port) {
                return Ok(port);
            }
        }
        let end = usize::from(r.start) + r.held.len().saturating_sub(1);
        Err(PortError::Exhausted {
            protocol: p,
            start: r.start,
            end: u16::try_from(end).unwrap_or(u16::MAX),
        })
    }

    /// Whether a port for every protocol in `protocols` could be reserved now.
    pub fn can_serve(&self, protocols: &[Protocol]) -> Result<(), PortError> {
        for p in protocols {
            self.find(*p)?;
        }
        Ok(())
    }

    /// Exactly `port` of protocol `p`, when it is in range, not held and bindable now.
    fn find_pinned(&self, p: Protocol, port: u16) -> Result<u16, PortError> {
        let r = &self.ranges[p];
        let end = usize::from(r.start) + r.held.len().saturating_sub(1);
        let end = u16::try_from(end).unwrap_or(u16::MAX);
        if port < r.start || port > end {
            return Err(PortError::PinnedOutside {
                protocol: p,
                port,
                start: r.start,
                end,
            });
        }
        let why = if self.is_held(p, port) {
            "held by a child of this master"
        } else if !(self.probe)(p, port) {
            "bound by another process"
        } else {
            return Ok(port);
        };
        Err(PortError::PinnedTaken {
            protocol: p,
            port,
            why,
        })
    }

    /// Reserves the first free port of each protocol; all or nothing.
    pub fn reserve(&mut self, protocols: &[Protocol]) -> Result<Ports, PortError> {
        self.reserve_pinned(protocols, &PerProtocol::from_fn(|_| None))
    }

    /// Like [`PortOffice::reserve`], with exactly the port `pins` names for
    /// each protocol it pins (AllexJS `tcpport`, `httpport`, `wsport`).
    pub fn reserve_pinned(
        &mut self,
        protocols: &[Protocol],
        pins: &PerProtocol<Option<u16>>,
    ) -> Result<Ports, PortError> {
        let mut ports = Ports::default();
        for p in protocols {
            let found = match pins[*p] {
                Some(port) => self.find_pinned(*p, port),
                None => self.find(*p),
            };
            match found {
                Ok(port) => {
                    self.mark(*p, port, true);
                    ports.set(*p, Some(port));
                }
                Err(e) => {
                    self.release(&ports);
                    return Err(e);
                }
            }
        }
        Ok(ports)
    }

    /// Takes specific ports (a restarted inventory); false when one is held already.
    pub fn hold(&mut self, ports: &Ports) -> bool {
        if ports.iter().any(|(p, port)| self.is_held(p, port)) {
            return false;
        }
        for (p, port) in ports.iter() {
            self.mark(p, port, true);
        }
        true
    }

    /// Gives ports back to the office.
    pub fn release(&mut self, ports: &Ports) {
        for (p, port) in ports.iter() {
            self.mark(p, port, false);
        }
    }

    /// Whether this office holds `port` of protocol `p`.
    pub fn is_held(&self, p: Protocol, port: u16) -> bool {
        let r = &self.ranges[p];
        port.checked_sub(r.start)
            .and_then(|i| r.held.get(usize::from(i)).copied())
            .unwrap_or(false)
    }

    /// Ports per protocol not held by this master (the bind probe is not run).
    pub fn free_counts(&self) -> PortCounts {
        PerProtocol::from_fn(|p| {
            let r = &self.ranges[p];
            u32::try_from(r.held.len() - r.held_count).unwrap_or(u32::MAX)
        })
        .into()
    }

    fn mark(&mut self, p: Protocol, port: u16, on: bool) {
        let r = &mut self.ranges[p];
        let Some(slot) = port
            .checked_sub(r.start)
            .and_then(|i| r.held.get_mut(usize::from(i)))
        else {
            return;
        };
        if *slot != on {
            *slot = on;
            if on {
                r.held_count += 1;
            } else {
                r.held_count -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn office(size: u16) -> PortOffice {
        PortOffice::new(
            PerProtocol {
                tcp: 20000,
                http: 21000,
                ws: 22000,
            },
            size,
            Box::new(|_, _| true),
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(Vec<Protocol>),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::sample::subsequence(Protocol::ALL.to_vec(), 1..=3).prop_map(Op::Reserve),
            any::<usize>().prop_map(Op::Release),
        ]
    }

    proptest! {
        #[test]
        fn no_port_is_handed_out_twice_while_held(size in 1u16..20, ops in proptest::collection::vec(op(), 1..80)) {
            let mut o = office(size);
            let mut live: Vec<Ports> = Vec::new();
            for op in ops {
                match op {
                    Op::Reserve(ps) => {
                        if let Ok(ports) = o.reserve(&ps) {
                            for (p, port) in ports.iter() {
                                prop_assert!(o.ranges[p].start <= port);
                                prop_assert!(!live.iter().any(|l| l.get(p) == Some(port)), "{p} {port} handed out twice");
                            }
                            prop_assert_eq!(ports.iter().count(), ps.len());
                            live.push(ports);
                        } else {
                            // Exhaustion only when some requested protocol has no unheld port.
                            prop_assert!(ps.iter().any(|p| live.iter().filter(|l| l.get(*p).is_some()).count() == usize::from(size)));
                        }
                    }
                    Op::Release(i) if !live.is_empty() => {
                        let ports = live.swap_remove(i % live.len());
                        o.release(&ports);
                    }
                    Op::Release(_) => {}
                }
                let counts = o.free_counts();
                for p in Protocol::ALL {
                    let used = live.iter().filter(|l| l.get(p).is_some()).count();
                    prop_assert_eq!(counts.get(p) as usize, usize::from(size) - used);
                }
            }
        }

        #[test]
        fn every_released_port_can_be_handed_out_again(size in 1u16..30, release in proptest::collection::vec(any::<bool>(), 30)) {
            let mut o = office(size);
            let all: Vec<Ports> = (0..size).map(|_| o.reserve(&Protocol::ALL).unwrap()).collect();
            let mut freed = HashSet::new();
            for (ports, r) in all.iter().zip(release.iter()) {
                if *r {
                    o.release(ports);
                    freed.insert(ports.tcp.unwrap());
                }
            }
            let mut again = HashSet::new();
            while let Ok(ports) = o.reserve(&[Protocol::Tcp]) {
                again.insert(ports.tcp.unwrap());
            }
            prop_assert_eq!(again, freed);
        }

        #[test]
        fn a_range_of_size_k_serves_exactly_k_children(k in 1u16..200) {
            let mut o = office(k);
            let mut seen = HashSet::new();
            for _ in 0..k {
                let ports = o.reserve(&Protocol::ALL).unwrap();
                prop_assert!(seen.insert(ports.ws.unwrap()));
            }
            let e = o.reserve(&[Protocol::Http]).unwrap_err();
            let exhausted_http = matches!(e, PortError::Exhausted { protocol: Protocol::Http, .. });
            prop_assert!(exhausted_http, "{e}");
            prop_assert_eq!(o.free_counts(), PortCounts::default());
        }
    }

    #[test]
    fn first_free_port_is_taken_from_the_range_start() {
        let mut o = office(5);
        assert_eq!(o.reserve(&[Protocol::Http]).unwrap().http, Some(21000));
        let second = o.reserve(&Protocol::ALL).unwrap();
        assert_eq!(
            (second.tcp, second.http, second.ws),
            (Some(20000), Some(21001), Some(22000))
        );
    }

    #[test]
    fn failed_reservation_holds_nothing() {
        let mut o = office(1);
        o.reserve(&[Protocol::Ws]).unwrap();
        assert!(o.reserve(&Protocol::ALL).is_err());
        assert_eq!(
            o.free_counts(),
            PortCounts {
                tcp: 1,
                http: 1,
                ws: 0
            }
        );
    }

    #[test]
    fn a_port_another_process_listens_on_is_skipped() {
        // A real listener on an OS-chosen port stands for an unrelated process.
        let other = TcpListener::bind("0.0.0.0:0").unwrap();
        let busy = other.local_addr().unwrap().port();
        if busy == u16::MAX {
            return;
        }
        let mut o = PortOffice::new(
            PerProtocol {
                tcp: busy,
                http: 1,
                ws: 2,
            },
            50,
            bind_probe(),
        );
        let ports = o.reserve(&[Protocol::Tcp]).unwrap();
        assert_ne!(ports.tcp, Some(busy));
        drop(other);
        o.release(&ports);
        assert_eq!(o.reserve(&[Protocol::Tcp]).unwrap().tcp, Some(busy));
    }

    #[test]
    fn a_pinned_port_is_reserved_exactly_or_refused_with_why() {
        let mut o = office(10);
        let pins = |tcp| PerProtocol {
            tcp,
            http: None,
            ws: None,
        };
        let got = o
            .reserve_pinned(&[Protocol::Tcp, Protocol::Http], &pins(Some(20005)))
            .unwrap();
        assert_eq!((got.tcp, got.http), (Some(20005), Some(21000)));
        let again = o.reserve_pinned(&[Protocol::Tcp], &pins(Some(20005)));
        assert!(
            matches!(again, Err(PortError::PinnedTaken { port: 20005, .. })),
            "{again:?}"
        );
        let far = o.reserve_pinned(&[Protocol::Tcp], &pins(Some(30000)));
        assert!(
            matches!(
                far,
                Err(PortError::PinnedOutside {
                    port: 30000,
                    start: 20000,
                    end: 20009,
                    ..
                })
            ),
            "{far:?}"
        );
        assert_eq!(o.free_counts().http, 9, "a refusal holds nothing");
        let mut busy = PortOffice::new(
            PerProtocol::from_fn(|p| match p {
                Protocol::Tcp => 20000,
                Protocol::Http => 21000,
                Protocol::Ws => 22000,
            }),
            10,
            Box::new(|_, port| port != 20003),
        );
        let e = busy
            .reserve_pinned(&[Protocol::Tcp], &pins(Some(20003)))
            .unwrap_err();
        assert!(e.to_string().contains("bound by another process"), "{e}");
    }
}

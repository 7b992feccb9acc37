//! Listening sockets the master binds for `sockets: inherit` entries and
//! holds while their need stays on this master: a crashed service's port
//! keeps accepting (into the backlog) until its replacement, which gets the
//! very same sockets, takes the waiting connections.

use allex_protocol::{Ports, Protocol};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};

/// The sockets held for one instance.
#[derive(Debug)]
pub struct Held {
    /// The ports they are bound to.
    pub ports: Ports,
    listeners: Vec<(Protocol, TcpListener)>,
}

impl Held {
    /// Binds every declared port on the wildcard address, as services do.
    pub fn bind(ports: &Ports) -> std::io::Result<Held> {
        let mut listeners = Vec::new();
        for (protocol, port) in ports.iter() {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot bind {protocol} port {port}: {e}"))
            })?;
            listeners.push((protocol, l));
        }
        Ok(Held {
            ports: *ports,
            listeners,
        })
    }

    /// Copies of the sockets for one spawn, in `tcp`, `http`, `ws` order (the
    /// copies are closed once the child has its own).
    pub fn copies(&self) -> std::io::Result<Vec<(Protocol, OwnedFd)>> {
        self.listeners
            .iter()
            .map(|(p, l)| l.as_fd().try_clone_to_owned().map(|fd| (*p, fd)))
            .collect()
    }
}

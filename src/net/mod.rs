//! The network edge's defence against resource exhaustion (issue: local
//! denial of service): every listener — the Workload API socket, the admin
//! socket and the TLS listener — admits connections through a [`Limiter`]
//! (caps per listener and per peer, a reserve for operators, a cap on TLS
//! handshakes in progress), serves them as [`Limited`] streams that close
//! once no request has been in flight for the idle timeout, and pings HTTP/2
//! peers so half-open connections are closed too. [`fds`] raises the
//! descriptor limit and shares it between the listeners of one process.
//!
//! A refused connection is closed at once and logged as a warning that names
//! the cap and the peer, at most once per cap every ten seconds.

mod conn;
pub mod fds;
mod incoming;
mod limits;

pub use conn::{Bearer, InFlight, InFlightLayer, Limited, RequestGuard, Tracked, builder};
pub use incoming::limit_incoming;
pub use limits::{Admission, Cap, Limiter, Limits, Peer, Refused};

#[cfg(test)]
mod tests;

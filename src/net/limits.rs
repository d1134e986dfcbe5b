//! Connection caps and their admission: how many connections a listener, one
//! peer and the TLS handshake stage may hold, the reserve kept for operators,
//! and the rate-limited warning logged when a cap refuses someone.

use crate::sync::lock;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// At most one warning per cap in this long; the next one says how many
/// refusals it stands for, so a flood cannot flood the log as well.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The limits of one listener. The defaults ([`Limits::workload`],
/// [`Limits::admin`], [`Limits::tcp`]) are meant for production and are
/// documented in the README; `fds::fit` lowers the caps when the process's
/// descriptor limit cannot hold them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on the listener.
    pub max_connections: usize,
    /// Connections open at once from one peer (one uid on a Unix socket).
    /// `None` on TCP, where many agents may share an address behind NAT and
    /// only the listener and handshake caps apply.
    pub max_per_peer: Option<usize>,
    /// The last this many connections are kept for operators: anyone else is
    /// refused once only the reserve is left.
    pub operator_reserve: usize,
    /// TLS handshakes in progress at once (TCP only).
    pub max_handshakes: usize,
    /// How long a client has to finish the TLS handshake (TCP only).
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING asks the peer whether it is still there.
    pub keepalive_interval: Duration,
    /// How long an unanswered PING waits before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// Closes connections that hold no request for five minutes: long enough
/// that a client between calls keeps its connection, short enough that
/// abandoned ones are reclaimed. Clients with a watch stream open are never
/// idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// gRPC's recommended minimum server PING interval is a few minutes for
/// clients; a server may ping more often. One minute finds a vanished peer
/// quickly at a cost of two small frames a minute per connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// hyper's default: a healthy peer answers a PING within milliseconds.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Limits {
    /// The Workload API socket: every local process may connect, so one uid
    /// may hold at most an eighth of the connections. A node's workloads
    /// often share a uid, hence the generous per-uid cap.
    pub const fn workload() -> Self {
        Self {
            max_connections: 8192,
            max_per_peer: Some(1024),
            operator_reserve: 0,
            ..Self::tcp()
        }
    }

    /// The admin socket: operators open one connection per command, so a
    /// small budget suffices; the last sixteen are kept for operators so
    /// other local users cannot lock them out.
    pub const fn admin() -> Self {
        Self {
            max_connections: 256,
            max_per_peer: Some(32),
            operator_reserve: 16,
            ..Self::tcp()
        }
    }

    /// The TLS listener: agents hold one long-lived connection each; a TLS
    /// handshake costs CPU, so only so many run at once.
    pub const fn tcp() -> Self {
        Self {
            max_connections: 8192,
            max_per_peer: None,
            operator_reserve: 0,
            max_handshakes: 128,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
        }
    }
}

impl Limits {
    /// These limits with `max_connections` set to `new`. When that lowers
    /// it, the per-peer cap and the operator reserve are lowered in
    /// proportion, so their balance stays the same and neither reaches zero
    /// (a reserve still leaves room for others), and the handshake cap is
    /// kept within the new total.
    pub fn with_max_connections(self, new: usize) -> Self {
        let new = new.max(1);
        let old = self.max_connections.max(1);
        if new >= old {
            return Self {
                max_connections: new,
                ..self
            };
        }
        // new < old, so each scaled value is below the one it scales.
        let scale = |v: usize| {
            let scaled = (v as u128) * (new as u128) / (old as u128);
            usize::try_from(scaled).unwrap_or(v).max(1)
        };
        Self {
            max_connections: new,
            max_per_peer: self.max_per_peer.map(|p| scale(p).min(new)),
            operator_reserve: match self.operator_reserve {
                0 => 0,
                r => scale(r).min(new - 1),
            },
            max_handshakes: self.max_handshakes.min(new),
            ..self
        }
    }
}

/// Who is connecting, as far as a cap is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A Unix-socket peer, by the uid the kernel reports.
    Uid(u32),
    /// A TCP peer, by address.
    Addr(IpAddr),
    /// A peer whose credentials could not be read; all such peers share one
    /// per-peer count, so they cannot dodge the cap by hiding.
    Unknown,
}

impl Peer {
    /// The uid the kernel reports for a Unix-socket peer.
    pub fn of_unix(stream: &tokio::net::UnixStream) -> Self {
        stream
            .peer_cred()
            .map_or(Self::Unknown, |cred| Self::Uid(cred.uid()))
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(uid) => write!(f, "uid {uid}"),
            Self::Addr(addr) => write!(f, "address {addr}"),
            Self::Unknown => f.write_str("a peer with unknown credentials"),
        }
    }
}

/// Why a connection was closed at once instead of being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The listener already holds `max_connections`.
    #[error("{max} connections are open, the listener's cap")]
    ListenerFull {
        /// The cap.
        max: usize,
    },
    /// Only the operator reserve is left and the peer is not an operator.
    #[error("the last {reserve} connections are kept for operators")]
    ReservedForOperators {
        /// The reserve.
        reserve: usize,
    },
    /// The peer already holds `max_per_peer` connections.
    #[error("the peer holds {max} connections, the cap for one peer")]
    PeerFull {
        /// The cap.
        max: usize,
    },
    /// `max_handshakes` TLS handshakes are already in progress.
    #[error("{max} TLS handshakes are in progress, the cap")]
    HandshakesBusy {
        /// The cap.
        max: usize,
    },
}

/// The caps, for counting refusals and rate-limiting their warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    /// `max_connections`.
    Listener,
    /// `operator_reserve`.
    Reserve,
    /// `max_per_peer`.
    Peer,
    /// `max_handshakes`.
    Handshakes,
    /// Not a cap: accepting failed, most likely because the process ran out
    /// of file descriptors.
    Accept,
}

impl Refused {
    /// The cap that refused.
    pub fn cap(&self) -> Cap {
        match self {
            Self::ListenerFull { .. } => Cap::Listener,
            Self::ReservedForOperators { .. } => Cap::Reserve,
            Self::PeerFull { .. } => Cap::Peer,
            Self::HandshakesBusy { .. } => Cap::Handshakes,
        }
    }
}

/// Decides whether one more connection fits: `open` on the listener,
/// `of_peer` from this peer, `operator` if the peer may use the reserve.
pub(super) fn decide(
    limits: &Limits,
    open: usize,
    of_peer: usize,
    operator: bool,
) -> Result<(), Refused> {
    if open >= limits.max_connections {
        return Err(Refused::ListenerFull {
            max: limits.max_connections,
        });
    }
    if !operator
        && open
            >= limits
                .max_connections
                .saturating_sub(limits.operator_reserve)
    {
        return Err(Refused::ReservedForOperators {
            reserve: limits.operator_reserve,
        });
    }
    match limits.max_per_peer {
        Some(max) if of_peer >= max => Err(Refused::PeerFull { max }),
        _ => Ok(()),
    }
}

/// One cap's warning state: when it last warned and what it has refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct WarnGate {
    last: Option<Instant>,
    /// Refusals since the last warning.
    pub(super) suppressed: u64,
    /// Refusals in all.
    pub(super) total: u64,
}

impl WarnGate {
    /// Counts one refusal at `now`; returns how many went unreported before
    /// it when this one should be logged.
    pub(super) fn refuse(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= WARN_INTERVAL);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Open connections, in all and per peer.
#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_peer: HashMap<Peer, usize>,
}

/// Admits connections to one listener under its [`Limits`].
pub struct Limiter {
    listener: &'static str,
    limits: Limits,
    operator: Box<dyn Fn(Peer) -> bool + Send + Sync>,
    counts: Mutex<Counts>,
    handshakes: Arc<Semaphore>,
    warnings: Mutex<HashMap<Cap, WarnGate>>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter for `listener` (named in warnings) where no peer may use the
    /// operator reserve.
    pub fn new(listener: &'static str, limits: Limits) -> Arc<Self> {
        Self::with_operators(listener, limits, |_| false)
    }

    /// A limiter whose operator reserve is open to peers `operator` accepts.
    pub fn with_operators(
        listener: &'static str,
        limits: Limits,
        operator: impl Fn(Peer) -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            limits,
            operator: Box::new(operator),
            counts: Mutex::default(),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            warnings: Mutex::default(),
        })
    }

    /// The limits this listener enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits one connection from `peer`, or refuses it (logging the
    /// refusal). The connection counts until the admission is dropped.
    pub fn admit(self: &Arc<Self>, peer: Peer) -> Result<Admission, Refused> {
        let operator = (self.operator)(peer);
        let decided = {
            let mut counts = lock(&self.counts);
            let of_peer = counts.per_peer.get(&peer).copied().unwrap_or(0);
            let decided = decide(&self.limits, counts.open, of_peer, operator);
            if decided.is_ok() {
                counts.open += 1;
                *counts.per_peer.entry(peer).or_insert(0) += 1;
            }
            decided
        };
        match decided {
            Ok(()) => Ok(Admission {
                limiter: self.clone(),
                peer,
            }),
            Err(refused) => {
                self.refused(peer, refused);
                Err(refused)
            }
        }
    }

    /// Takes a TLS handshake slot for `peer`, or refuses (logging it).
    pub fn begin_handshake(&self, peer: Peer) -> Result<OwnedSemaphorePermit, Refused> {
        self.handshakes.clone().try_acquire_owned().map_err(|_| {
            let refused = Refused::HandshakesBusy {
                max: self.limits.max_handshakes,
            };
            self.refused(peer, refused);
            refused
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.counts).open
    }

    /// How many connections `cap` has refused so far.
    pub fn refusals(&self, cap: Cap) -> u64 {
        lock(&self.warnings).get(&cap).map_or(0, |g| g.total)
    }

    fn refused(&self, peer: Peer, refused: Refused) {
        let gate = lock(&self.warnings)
            .entry(refused.cap())
            .or_default()
            .refuse(Instant::now());
        if let Some(suppressed) = gate {
            tracing::warn!(
                listener = self.listener,
                %peer,
                refused_since_last_warning = suppressed,
                "{}: refusing a connection from {peer}: {refused}",
                self.listener,
            );
        }
    }

    /// Logs (rate-limited) that accepting failed.
    pub fn accept_failed(&self, error: &dyn fmt::Display) {
        let gate = lock(&self.warnings)
            .entry(Cap::Accept)
            .or_default()
            .refuse(Instant::now());
        if let Some(suppressed) = gate {
            tracing::warn!(
                listener = self.listener,
                failures_since_last_warning = suppressed,
                "{}: accepting a connection failed: {error}",
                self.listener,
            );
        }
    }
}

/// A connection's place under its listener's caps, given back on drop.
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<Limiter>,
    peer: Peer,
}

impl Admission {
    /// The limits of the listener that admitted the connection.
    pub fn limits(&self) -> &Limits {
        &self.limiter.limits
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = lock(&self.limiter.counts);
        counts.open = counts.open.saturating_sub(1);
        if let Some(n) = counts.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forget peers with nothing open, so the map stays as small
                // as the set of connected peers.
                counts.per_peer.remove(&self.peer);
            }
        }
    }
}

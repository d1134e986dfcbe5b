//! The process's file-descriptor budget: the soft `RLIMIT_NOFILE` is raised
//! to the hard limit at start, and the listeners' connection caps are fitted
//! under it so that accepting can never exhaust the table. In `sigil dev`
//! the server and the agent share one table; the admin socket's claim is
//! granted first, so a Workload API flood cannot take its descriptors.

use super::limits::Limits;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but accepted connections: the store and
/// audit log, the runtime, outgoing connections, and the `/proc` files that
/// attestation opens.
pub const RESERVED_FDS: u64 = 256;

/// Descriptors one Workload API connection holds: its socket, the caller's
/// pidfd (`SO_PEERPIDFD`), and the caller's `/proc/<pid>` directory, kept
/// open once attested so repeat calls look `exe` and `status` up in it
/// without a path walk.
pub const WORKLOAD_FDS_PER_CONN: u64 = 3;

/// Raises the soft descriptor limit to the hard limit and returns the soft
/// limit in force afterwards (`u64::MAX` for unlimited). A failure leaves
/// the limit as it was and is logged: the caps are then fitted under it.
pub fn raise_nofile_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if soft >= hard {
        return soft;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = soft, to = hard, "raised the open-file limit");
            hard
        }
        Err(e) => {
            tracing::warn!(limit = soft, error = %e, "could not raise the open-file limit");
            soft
        }
    }
}

/// One listener's claim on the descriptor table.
#[derive(Debug)]
pub struct Claim<'a> {
    /// The listener, named in the log if its caps are lowered.
    pub listener: &'static str,
    /// Its limits, lowered in place when they do not fit.
    pub limits: &'a mut Limits,
    /// Descriptors one of its connections may hold.
    pub fds_per_conn: u64,
    /// Granted in full before the others share what is left (the admin
    /// socket, so an operator can always get in).
    pub first: bool,
}

/// Lowers the claims' caps until all of them fit under `nofile` descriptors
/// less [`RESERVED_FDS`]. Claims marked `first` are granted in full while
/// they fit; the rest share the remainder in proportion to what they asked.
pub fn fit(nofile: u64, claims: &mut [Claim<'_>]) {
    let wants: Vec<(u64, bool)> = claims.iter().map(|c| (want(c), c.first)).collect();
    let granted = shares(nofile.saturating_sub(RESERVED_FDS), &wants);
    for (claim, fds) in claims.iter_mut().zip(granted) {
        let old = claim.limits.max_connections;
        let new = usize::try_from(fds / claim.fds_per_conn.max(1))
            .unwrap_or(usize::MAX)
            .clamp(1, old.max(1));
        if new < old {
            tracing::info!(
                listener = claim.listener,
                nofile,
                "{}: at most {new} connections instead of {old}, to fit the open-file limit",
                claim.listener,
            );
            *claim.limits = claim.limits.with_max_connections(new);
        }
    }
}

/// Fits the listeners one process serves under `nofile` descriptors: the
/// admin socket's claim is granted first, so in `sigil dev`, where the
/// agent shares the table, a Workload API flood cannot take the descriptors
/// an operator needs; the TLS listener and the Workload API socket share the
/// rest.
pub fn fit_listeners(
    nofile: u64,
    admin: Option<&mut Limits>,
    tcp: Option<&mut Limits>,
    workload: Option<&mut Limits>,
) {
    let claim = |listener, limits, fds_per_conn, first| Claim {
        listener,
        limits,
        fds_per_conn,
        first,
    };
    let mut claims: Vec<Claim<'_>> = [
        admin.map(|l| claim("admin socket", l, 1, true)),
        tcp.map(|l| claim("TLS listener", l, 1, false)),
        workload.map(|l| claim("Workload API socket", l, WORKLOAD_FDS_PER_CONN, false)),
    ]
    .into_iter()
    .flatten()
    .collect();
    fit(nofile, &mut claims);
}

fn want(claim: &Claim<'_>) -> u64 {
    u64::try_from(claim.limits.max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(claim.fds_per_conn.max(1))
}

/// Splits `available` descriptors between claims `(wanted, first)`.
pub(super) fn shares(available: u64, wants: &[(u64, bool)]) -> Vec<u64> {
    let mut left = available;
    let mut out: Vec<u64> = wants
        .iter()
        .map(|&(want, first)| {
            if first {
                let granted = want.min(left);
                left -= granted;
                granted
            } else {
                0
            }
        })
        .collect();
    let rest: u64 = wants
        .iter()
        .filter(|(_, first)| !first)
        .map(|(w, _)| *w)
        .fold(0, u64::saturating_add);
    for (slot, &(want, first)) in out.iter_mut().zip(wants) {
        if !first {
            *slot = if rest <= left {
                want
            } else {
                // rest > left >= 0, so the divisor is never zero.
                let share = u128::from(want) * u128::from(left) / u128::from(rest);
                u64::try_from(share).unwrap_or(u64::MAX)
            };
        }
    }
    out
}

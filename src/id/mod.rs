//! SPIFFE identity types (SPEC §3.1, the SPIFFE-ID standard): trust domains,
//! SPIFFE IDs, workload selectors and durations. Each is a newtype with a
//! private field that can only be built by parsing, so holding one proves it
//! is well formed.

mod dns;
mod duration;
mod selector;
mod spiffe_id;

pub use dns::{DnsName, DnsNameError};
pub use duration::{DurationError, Ttl};
pub use selector::{Selector, SelectorError};
pub use spiffe_id::{IdError, MAX_ID_LEN, SpiffeId, TrustDomain};

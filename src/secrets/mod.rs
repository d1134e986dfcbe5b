//! Sealed secrets, the domain rules (SPEC §3.3 `sigil secret`, §7 "Vault KV v2"):
//! what a secret path is, what a grant allows, how versions are numbered, kept,
//! deleted and destroyed, what a rotation generator spec says, and when a
//! rotation is due.
//!
//! Plain synchronous Rust, time passed in (STYLE §1). The server keeps the
//! records in the sealed store and applies these rules (`server::secrets`).

mod fields;
mod generator;
mod grant;
mod kv;
mod path;
mod rotation;

pub use fields::{
    FieldError, Fields, MAX_FIELD_NAME, MAX_FIELDS, MAX_TOTAL_BYTES, MAX_VALUE_BYTES,
};
pub use generator::{Charset, GeneratorError, GeneratorSpec, generate_local, merge, random_string};
pub use grant::{Grant, GrantError, Pattern, Verb};
pub use kv::{
    CustomMetadata, DEFAULT_MAX_VERSIONS, KvError, MAX_CUSTOM_KEY, MAX_CUSTOM_KEYS,
    MAX_CUSTOM_VALUE, MAX_MAX_VERSIONS, MetaError, SecretMeta, VersionMeta, VersionState,
};
pub use path::{MAX_PATH_BYTES, PathError, SecretPath};
pub use rotation::{
    PendingRotation, Retiring, RotationAction, RotationError, RotationPlan, RotationSettings,
    RotationState, Schedule, backoff, plan,
};

#[cfg(test)]
pub(crate) mod tests;

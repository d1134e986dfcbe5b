//! CI login (SPEC §3.3 `sigil login oidc`): a CI job's OIDC JWT, checked
//! against its issuer's keys and its role's bound claims, becomes a
//! short-lived sigil token scoped to the role's grants.
//!
//! The checks themselves are pure (`crate::oidc`); this module holds the
//! issuers' key sets and signs and records the token. A key set comes from a
//! file or an https URL; it is read at the first login and read again when a
//! token names a key it does not hold (a platform rotating its keys), at
//! most once per [`REFRESH_EVERY`] per issuer, so a flood of made-up key IDs
//! cannot turn sigil into a fetcher.

use super::Server;
use crate::audit::IssuedToken;
use crate::config::{JwksSource, OidcIssuer, OidcRole};
use crate::id::SpiffeId;
use crate::oidc::{IssuerPolicy, Jwks, LoginError};
use crate::secret::Secret;
use crate::server::TokenRecord;
use crate::sync::{lock, read, write};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The least time between two reads of one issuer's key set.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The `aud` of every sigil token: tokens are for sigil itself.
pub const TOKEN_AUDIENCE: &str = "sigil";

/// Why a login was refused. Every message names the reason; none holds the
/// JWT.
#[derive(Debug, thiserror::Error)]
pub enum LoginRefused {
    /// No `[[oidc.role]]` has the name.
    #[error("no role named {0:?}")]
    UnknownRole(String),
    /// The JWT failed a check.
    #[error("{0}")]
    Jwt(#[from] LoginError),
    /// The issuer's keys could not be read.
    #[error("keys of issuer {issuer:?} are unavailable: {message}")]
    Keys {
        /// The issuer's name.
        issuer: String,
        /// Why.
        message: String,
    },
    /// The role's SPIFFE ID, filled in from the claims, is not a workload ID
    /// of this trust domain.
    #[error(
        "role {role:?} gives SPIFFE ID {id:?}, which is not a workload of this trust domain: {message}"
    )]
    BadSubject {
        /// The role.
        role: String,
        /// The interpolated ID.
        id: String,
        /// Why.
        message: String,
    },
    /// The role's SPIFFE ID is quarantined.
    #[error("{id} is quarantined: {reason}")]
    Quarantined {
        /// The interpolated ID.
        id: String,
        /// The quarantine's reason.
        reason: String,
    },
    /// The server could not sign or record the token.
    #[error("cannot issue the token: {0}")]
    Issue(String),
}

/// Whether `role` could name a role at all (1 to 64 of `A-Z a-z 0-9 _ . -`,
/// as the configuration requires). Checked before a login is audited, so
/// an anonymous caller cannot make the audit log carry a megabyte of name.
pub fn role_name_ok(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A token just issued.
#[derive(Debug)]
pub struct Issued {
    /// The token (a bearer credential).
    pub token: Secret,
    /// Its record.
    pub record: TokenRecord,
    /// Its record as the audit record of its issue carries it (the token's
    /// durable record).
    pub issued: Arc<IssuedToken>,
}

struct KeySet {
    jwks: Arc<Jwks>,
    read_at: Instant,
}

/// The last failed read of an issuer's keys: further logins get its error
/// until [`REFRESH_EVERY`] has passed, instead of each fetching again.
struct Failed {
    message: String,
    at: Instant,
}

/// The issuers' key sets, read on demand.
#[derive(Default)]
pub struct Logins {
    keys: RwLock<HashMap<String, KeySet>>,
    failed: Mutex<HashMap<String, Failed>>,
    /// One read of an issuer's keys at a time.
    reading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins").finish_non_exhaustive()
    }
}

async fn read_jwks(issuer: &OidcIssuer) -> Result<Jwks, String> {
    let bytes = match &issuer.jwks {
        JwksSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
            })
            .await
            .map_err(|e| e.to_string())??
        }
        JwksSource::Url { url, ca_file } => {
            let url = crate::config::EndpointUrl::parse(url)?;
            crate::federation::fetch_web(&url, ca_file.as_deref())
                .await?
                .into_bytes()
        }
    };
    Jwks::parse(&bytes).map_err(|e| e.to_string())
}

impl Logins {
    /// The issuer's key set: the cached one, or read now when there is
    /// none, or when `refresh` and the cached one is older than
    /// [`REFRESH_EVERY`].
    async fn jwks(&self, issuer: &OidcIssuer, refresh: bool) -> Result<Arc<Jwks>, LoginRefused> {
        let fresh_enough = |k: &KeySet| {
            !refresh
                || crate::clock::monotonic().saturating_duration_since(k.read_at) < REFRESH_EVERY
        };
        if let Some(k) = read(&self.keys).get(&issuer.name)
            && fresh_enough(k)
        {
            return Ok(k.jwks.clone());
        }
        let gate = lock(&self.reading)
            .entry(issuer.name.clone())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        // Someone else may have read it while this one waited.
        if let Some(k) = read(&self.keys).get(&issuer.name)
            && fresh_enough(k)
        {
            return Ok(k.jwks.clone());
        }
        let refused = |message: String| LoginRefused::Keys {
            issuer: issuer.name.clone(),
            message,
        };
        if let Some(f) = lock(&self.failed).get(&issuer.name)
            && crate::clock::monotonic().saturating_duration_since(f.at) < REFRESH_EVERY
        {
            return Err(refused(f.message.clone()));
        }
        let jwks = match read_jwks(issuer).await {
            Ok(j) => Arc::new(j),
            Err(message) => {
                tracing::warn!(issuer = %issuer.name, %message, "issuer keys unavailable");
                lock(&self.failed).insert(
                    issuer.name.clone(),
                    Failed {
                        message: message.clone(),
                        at: crate::clock::monotonic(),
                    },
                );
                return Err(refused(message));
            }
        };
        lock(&self.failed).remove(&issuer.name);
        write(&self.keys).insert(
            issuer.name.clone(),
            KeySet {
                jwks: jwks.clone(),
                read_at: crate::clock::monotonic(),
            },
        );
        Ok(jwks)
    }
}

fn policy_of(issuer: &OidcIssuer) -> IssuerPolicy {
    IssuerPolicy {
        issuer: issuer.issuer.clone(),
        audiences: issuer.audiences.clone(),
        algorithms: issuer.algorithms.clone(),
        leeway_secs: issuer.leeway_secs,
    }
}

impl Server {
    /// Checks `jwt` for `role` and issues a sigil token.
    pub async fn login_oidc(&self, role: &str, jwt: &str) -> Result<Issued, LoginRefused> {
        let oidc = &self.config().oidc;
        let role: &OidcRole = oidc
            .role(role)
            .ok_or_else(|| LoginRefused::UnknownRole(role.to_owned()))?;
        let issuer = oidc
            .issuer(&role.issuer)
            .ok_or_else(|| LoginRefused::Keys {
                issuer: role.issuer.clone(),
                message: "not configured".into(),
            })?;
        let now = crate::clock::unix_seconds(self.now());
        let policy = policy_of(issuer);
        let jwks = self.logins().jwks(issuer, false).await?;
        let verified = match crate::oidc::verify(jwt, &policy, &jwks, now) {
            // The platform may have rotated its keys since they were read.
            Err(LoginError::UnknownKeyId(_)) => {
                let jwks = self.logins().jwks(issuer, true).await?;
                crate::oidc::verify(jwt, &policy, &jwks, now)?
            }
            other => other?,
        };
        crate::oidc::check_bound_claims(&role.bound_claims, &verified.claims)?;
        let id_text = crate::oidc::interpolate(&role.spiffe_id, &verified.claims)?;
        let bad = |message: String| LoginRefused::BadSubject {
            role: role.name.clone(),
            id: id_text.clone(),
            message,
        };
        let id = SpiffeId::parse(&id_text).map_err(|e| bad(e.to_string()))?;
        if id.trust_domain_str() != self.trust_domain().as_str() {
            return Err(bad("another trust domain".into()));
        }
        // A quarantined identity gets no new token: a CI login is not an
        // mTLS request, so the gate's quarantine check never sees it.
        if let Some(q) = self.quarantined(&id) {
            return Err(LoginRefused::Quarantined {
                id: id.to_string(),
                reason: q.reason.clone(),
            });
        }
        self.issue_token(&id, role, &issuer.name, "oidc", now).await
    }

    async fn issue_token(
        &self,
        id: &SpiffeId,
        role: &OidcRole,
        source: &str,
        method: &str,
        now: u64,
    ) -> Result<Issued, LoginRefused> {
        let issue = |e: &dyn std::fmt::Display| LoginRefused::Issue(e.to_string());
        let authority = self.authority().map_err(|e| issue(&e))?;
        let (jti, mut claims) = super::tokens::first_claims(&role.grants)
            .ok_or_else(|| issue(&"the random source failed"))?;
        claims.insert("sigil_role".into(), Value::from(role.name.as_str()));
        let signed = authority
            .sign_token(
                id,
                &[TOKEN_AUDIENCE.to_owned()],
                &claims,
                role.ttl.as_duration(),
                self.now(),
            )
            .map_err(|e| issue(&e))?;
        let record = IssuedToken {
            jti,
            sha256: String::new(),
            spiffe_id: id.to_string(),
            method: method.to_owned(),
            role: role.name.clone(),
            source: source.to_owned(),
            grants: role.grants.clone(),
            issued_at: now,
            expires_at: signed.expires_at,
            audience: vec![TOKEN_AUDIENCE.to_owned()],
            cnf_x5t: None,
            jit_requests: Vec::new(),
        };
        let (record, issued) = self
            .tokens()
            .record(&signed.token, record, now)
            .map_err(|e| issue(&e))?;
        Ok(Issued {
            token: signed.token,
            record,
            issued,
        })
    }
}

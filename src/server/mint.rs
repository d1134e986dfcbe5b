//! Scoped tokens minted by a workload for itself (SPEC §3.3 `sigil token
//! mint`): a sigil token for an audience of its choice, carrying only
//! grants it holds, bound to the certificate it proved itself with.
//!
//! A scope must be covered by one of the caller's standing grants (the
//! policy data's `data.sigil.grants`) or by a grant of one of its active JIT
//! requests; a scope only a JIT grant covers ties the token to that request:
//! the token's `exp` is never later than the request's end, and the token is
//! in force only while the request is active.

use super::Server;
use super::login::TOKEN_AUDIENCE;
use super::tokens::TokenRecord;
use crate::audit::IssuedToken;
use crate::id::SpiffeId;
use crate::secret::Secret;
use crate::secrets::Grant;
use std::sync::Arc;
use std::time::Duration;

/// Most scopes in one token.
pub const MAX_SCOPES: usize = 32;
/// Longest audience, in bytes.
pub const MAX_AUDIENCE: usize = 256;
/// Lifetime when none is asked for.
pub const DEFAULT_TTL: u64 = 15 * 60;
/// Longest lifetime.
pub const MAX_TTL: u64 = 12 * 3600;

/// A minted token's own claims (beside `sub`, `aud`, `iat`, `exp`): those
/// of every sigil token (`jti`, `scope`), the JIT requests it relies on, and
/// the certificate it is bound to.
#[derive(serde::Serialize)]
struct MintClaims<'a> {
    jti: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    sigil_jit: &'a [String],
    cnf: Confirmation<'a>,
}

/// The `cnf` claim of a certificate-bound token (RFC 8705 §3.1).
#[derive(serde::Serialize)]
struct Confirmation<'a> {
    #[serde(rename = "x5t#S256")]
    x5t_s256: &'a str,
}

/// What a mint asks for.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// `VERB:PATTERN` scopes.
    pub scopes: Vec<String>,
    /// The one audience the token is for.
    pub audience: String,
    /// Seconds; 0 for the default.
    pub ttl: u64,
}

/// A minted token.
pub struct Minted {
    /// The token (a bearer credential).
    pub token: Secret,
    /// Its record.
    pub record: TokenRecord,
    /// Its record as the audit record of its issue carries it (the token's
    /// durable record).
    pub issued: Arc<IssuedToken>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"[redacted]")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Why a mint was refused. Each variant names the rule.
#[derive(Debug, thiserror::Error)]
pub enum MintRefused {
    /// No scopes, or too many.
    #[error("scopes: give 1 to {MAX_SCOPES}")]
    ScopeCount,
    /// A scope is not `VERB:PATTERN`.
    #[error("scope {scope:?}: {message}")]
    BadScope {
        /// The scope.
        scope: String,
        /// Why.
        message: String,
    },
    /// The audience is empty, too long or not printable.
    #[error("audience: give 1 to {MAX_AUDIENCE} printable characters")]
    BadAudience,
    /// The lifetime is over the maximum.
    #[error("ttl: at most {MAX_TTL}s")]
    TtlTooLong,
    /// The caller holds no grant covering a scope.
    #[error("scope {0:?} is not covered by a standing grant or an active JIT grant of the caller")]
    NotHeld(String),
    /// The caller is not a workload proving its SVID over mTLS.
    #[error("only a workload proving its SVID over mTLS mints tokens")]
    NotAWorkload,
    /// The server could not sign or record the token.
    #[error("cannot issue the token: {0}")]
    Issue(String),
}

impl MintRefused {
    /// Whether the caller's request is at fault (rather than the server).
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, MintRefused::Issue(_))
    }
}

fn check_audience(a: &str) -> Result<(), MintRefused> {
    if a.is_empty() || a.len() > MAX_AUDIENCE || a.chars().any(|c| c.is_control()) {
        return Err(MintRefused::BadAudience);
    }
    Ok(())
}

impl Server {
    /// Mints a token for `id`, bound to the certificate with thumbprint
    /// `x5t` (see the module notes for what it may carry).
    pub async fn mint_token(
        &self,
        id: &SpiffeId,
        x5t: String,
        asked: &MintRequest,
    ) -> Result<Minted, MintRefused> {
        if asked.scopes.is_empty() || asked.scopes.len() > MAX_SCOPES {
            return Err(MintRefused::ScopeCount);
        }
        check_audience(&asked.audience)?;
        let ttl = match asked.ttl {
            0 => DEFAULT_TTL,
            t if t > MAX_TTL => return Err(MintRefused::TtlTooLong),
            t => t,
        };
        let now = crate::clock::unix_seconds(self.now());
        let pdp = self.pdp();
        let standing = pdp.standing_grants(id.as_str());
        let jit = self.elevations().active_grants(id.as_str(), now);
        let mut scopes = Vec::with_capacity(asked.scopes.len());
        let mut requests: Vec<String> = Vec::new();
        let mut end = now.saturating_add(ttl);
        for text in &asked.scopes {
            let scope = Grant::parse(text).map_err(|e| MintRefused::BadScope {
                scope: text.clone(),
                message: e.to_string(),
            })?;
            // A grant that parses is written back exactly as its text (its
            // verb and pattern are kept as given), so the text is the scope.
            if standing.iter().any(|g| g.covers(&scope)) {
                scopes.push(text.clone());
                continue;
            }
            // Of the JIT grants that cover it, the one that lasts longest.
            let held = jit
                .iter()
                .filter(|g| Grant::parse(&g.grant).is_ok_and(|g| g.covers(&scope)))
                .max_by_key(|g| g.expires_at)
                .ok_or_else(|| MintRefused::NotHeld(text.clone()))?;
            end = end.min(held.expires_at);
            if !requests.contains(&held.request) {
                requests.push(held.request.clone());
            }
            scopes.push(text.clone());
        }
        let ttl = end.saturating_sub(now);
        if ttl == 0 {
            return Err(MintRefused::NotHeld(asked.scopes.join(" ")));
        }
        let issue = |e: &dyn std::fmt::Display| MintRefused::Issue(e.to_string());
        let authority = self.authority().map_err(|e| issue(&e))?;
        let jti = super::tokens::new_jti().ok_or_else(|| issue(&"the random source failed"))?;
        let scope = scopes.join(" ");
        let claims = MintClaims {
            jti: &jti,
            scope: &scope,
            sigil_jit: &requests,
            // RFC 8705 §3.1: the confirmation claim names the certificate
            // the token is bound to; sigil checks it on every presentation.
            cnf: Confirmation { x5t_s256: &x5t },
        };
        let audience = vec![asked.audience.clone()];
        let signed = authority
            .sign_token(id, &audience, &claims, Duration::from_secs(ttl), self.now())
            .map_err(|e| issue(&e))?;
        let record = IssuedToken {
            jti,
            sha256: String::new(),
            spiffe_id: id.as_str().to_owned(),
            method: "mint".into(),
            role: String::new(),
            source: "mtls".into(),
            grants: scopes,
            issued_at: now,
            expires_at: signed.expires_at,
            audience,
            cnf_x5t: Some(x5t),
            jit_requests: requests,
        };
        let (record, issued) = self
            .tokens()
            .record(&signed.token, record, now)
            .map_err(|e| issue(&e))?;
        Ok(Minted {
            token: signed.token,
            record,
            issued,
        })
    }

    /// Whether the token `record` is in force at `now`: live (not expired,
    /// not revoked), its holder not quarantined, and every JIT request it
    /// relies on still active. A quarantine revokes its holder's tokens when
    /// it is set; checking it here too keeps any token recorded for the
    /// holder since then (or whose revocation did not reach the store)
    /// inactive for introspection.
    pub fn token_in_force(&self, record: &TokenRecord, now: u64) -> bool {
        record.live(now)
            && self.quarantines().get(&record.spiffe_id).is_none()
            && record.jit_requests.iter().all(|id| {
                self.elevations()
                    .get(id)
                    .is_some_and(|r| r.state_at(now) == crate::jit::State::Active)
            })
    }
}

/// Whether `audience` is sigil's own.
pub fn is_sigil_audience(audience: &str) -> bool {
    audience == TOKEN_AUDIENCE
}

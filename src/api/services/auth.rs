//! `sigil.v1.Auth`: CI login with an OIDC JWT, and a token's holder looking
//! it up or revoking it. Each call passes the gate; a login is recorded with
//! the role asked for, then with its outcome (the token's `jti` and SPIFFE
//! ID, or the reason for the refusal). Tokens and JWTs are never recorded.

use crate::api::ApiError;
use crate::api::gate::{Caller, Gate};
use crate::api::pb::{self, auth_server::Auth};
use crate::policy::{Action, Resource};
use crate::secret::Secret;
use crate::server::Server;
use crate::server::login::{Issued, LoginRefused};
use crate::server::mint::{MintRefused, MintRequest};
use crate::server::{Jti, TokenError, TokenRecord};
use crate::tls::TlsConnInfo;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct AuthService {
    gate: Gate,
    server: Arc<Server>,
}

impl AuthService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A token record as the API shows it.
pub(crate) fn info(r: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        jti: r.jti().to_string(),
        spiffe_id: r.spiffe_id.clone(),
        role: r.role.clone(),
        issuer: r.source.clone(),
        grants: r.grants.clone(),
        issued_at: secs(r.issued_at),
        expires_at: secs(r.expires_at),
        revoked_at: r.revoked_at.map_or(0, secs),
        audience: r.audience.clone(),
        cnf_x5t_s256: r.cnf_x5t.clone().unwrap_or_default(),
        jit_requests: r.jit_requests.clone(),
    }
}

/// The RFC 7662 answer about `token` at `now` (shared by the gRPC and HTTP
/// APIs): `active` only when sigil issued it and it is in force (not
/// expired or revoked, and every JIT request it relies on still active;
/// a quarantined holder's tokens are revoked). An inactive token's claims
/// are not shown (RFC 7662 §2.2).
pub(crate) fn introspection(server: &Server, token: &[u8], now: u64) -> pb::IntrospectResponse {
    let Some(r) = server
        .tokens()
        .authenticate(token, now)
        .filter(|r| server.token_in_force(r, now))
    else {
        return pb::IntrospectResponse::default();
    };
    pb::IntrospectResponse {
        active: true,
        scope: r.grants.join(" "),
        sub: r.spiffe_id.clone(),
        aud: r.audience.clone(),
        iat: secs(r.issued_at),
        exp: secs(r.expires_at),
        jti: r.jti().to_string(),
        token_type: "Bearer".into(),
        cnf_x5t_s256: r.cnf_x5t.clone().unwrap_or_default(),
        sigil_jit: r.jit_requests.clone(),
    }
}

/// How a refused login answers: the JWT's fault is the caller's to fix.
pub(crate) fn refused(e: LoginRefused) -> ApiError {
    match e {
        LoginRefused::UnknownRole(_) | LoginRefused::Jwt(_) | LoginRefused::BadSubject { .. } => {
            ApiError::InvalidArgument(e.to_string())
        }
        LoginRefused::Quarantined { .. } => ApiError::Denied(e.to_string()),
        LoginRefused::Keys { .. } | LoginRefused::Issue(_) => ApiError::Internal(e.to_string()),
    }
}

/// A login through the gate (shared by the gRPC and HTTP APIs): the role
/// name checked before anything is recorded, the decision recorded before
/// the login acts, and its outcome after (the token's `jti`, or why it was
/// refused). The JWT is borrowed from its zeroizing buffer, never copied.
pub(crate) async fn gated_login(
    gate: &Gate,
    server: &Server,
    ext: &http::Extensions,
    role: &str,
    jwt: &Secret,
) -> Result<Issued, ApiError> {
    if !crate::server::login::role_name_ok(role) {
        return Err(ApiError::InvalidArgument(
            "role: use 1 to 64 of A-Z a-z 0-9 _ . -".into(),
        ));
    }
    let resource = Resource::new("role", Some(role.to_owned()));
    gate.authorize_parts(ext, Action::AuthLogin, resource.clone())
        .await?;
    let outcome = match std::str::from_utf8(jwt.expose()) {
        Ok(text) => server.login_oidc(role, text).await,
        Err(_) => Err(LoginRefused::Jwt(crate::oidc::LoginError::Malformed {
            reason: "not UTF-8",
        })),
    };
    let said = match &outcome {
        Ok(i) => Ok(format!(
            "issued token {} to {} until {}",
            i.issued.jti, i.record.spiffe_id, i.record.expires_at
        )),
        Err(e) => Err(e.to_string()),
    };
    // The record of the login is the token's durable record.
    let issued = outcome.as_ref().ok().map(|i| i.issued.clone());
    gate.record_issue(ext, Action::AuthLogin, &resource, said, issued)
        .await?;
    outcome.map_err(refused)
}

/// The token the caller presented, or why there is none.
pub(crate) fn presented(caller: &Caller) -> Result<TokenRecord, ApiError> {
    match caller {
        Caller::Token { record, .. } => Ok(record.clone()),
        _ => Err(ApiError::Unauthenticated(
            "no live sigil token was presented (authorization: Bearer)".into(),
        )),
    }
}

/// An introspection through the gate (shared by the gRPC and HTTP APIs),
/// recorded like a read: decided, answered, and the record (which token, by
/// `jti`, and whether it was active) written before the answer goes out and
/// synced with its group.
pub(crate) async fn gated_introspection(
    gate: &Gate,
    server: &Server,
    ext: &http::Extensions,
    token: &[u8],
) -> Result<pb::IntrospectResponse, ApiError> {
    let decided = gate
        .decide(ext, Action::TokenIntrospect, Resource::kind("token"))
        .await?;
    let now = crate::clock::unix_seconds(server.now());
    let r = introspection(server, token, now);
    let said = if r.active {
        format!("token {} is active", r.jti)
    } else {
        "an inactive or unknown token".to_owned()
    };
    decided.record(Ok(said)).await?;
    Ok(r)
}

/// How a refused mint answers.
fn mint_refused(e: MintRefused) -> ApiError {
    match e {
        MintRefused::NotHeld(_) | MintRefused::NotAWorkload => ApiError::Denied(e.to_string()),
        MintRefused::Issue(_) => ApiError::Internal(e.to_string()),
        _ => ApiError::InvalidArgument(e.to_string()),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn mint(
        &self,
        req: Request<pb::MintTokenRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let m = req.get_ref();
        let resource = Resource::new("token", Some(m.audience.clone()));
        // One durable record after the mint, before the token is handed out
        // (`Decided::settle`): the decision and the token it produced.
        let decided = self
            .gate
            .decide(req.extensions(), Action::TokenMint, resource)
            .await?;
        // The certificate the caller proved itself with is the one the
        // token is bound to.
        let leaf = req
            .extensions()
            .get::<TlsConnInfo>()
            .and_then(|t| t.peer.clone());
        let outcome = match (decided.caller(), leaf) {
            (Caller::Workload { id, .. }, Some(leaf)) => {
                let asked = MintRequest {
                    scopes: m.scopes.clone(),
                    audience: m.audience.clone(),
                    ttl: u64::try_from(m.ttl_seconds).unwrap_or(u64::MAX),
                };
                self.server
                    .mint_token(id, leaf.x5t().to_owned(), &asked)
                    .await
            }
            _ => Err(MintRefused::NotAWorkload),
        };
        // The record's `token` field carries the rest (holder, audience,
        // scopes, JIT requests, binding), as a login's does.
        let said = match &outcome {
            Ok(t) => {
                // Into a string of its final size: `format!` would guess
                // short and grow it.
                let mut said = String::with_capacity(40 + t.issued.jti.len());
                said.push_str("minted token ");
                said.push_str(&t.issued.jti);
                said.push_str(" until ");
                said.push_str(itoa::Buffer::new().format(t.record.expires_at));
                Ok(said)
            }
            Err(e) => Err(e.to_string()),
        };
        // The record of the mint is the token's durable record.
        let issued = outcome.as_ref().ok().map(|t| t.issued.clone());
        decided.settle(said, issued).await?;
        let minted = outcome.map_err(mint_refused)?;
        // A compact JWS is ASCII (base64url and dots), built as a String, so
        // this never fails; if it did, the token would be recorded (and its
        // mint audited) but never handed out, which grants nothing.
        let token = std::str::from_utf8(minted.token.expose())
            .map_err(|_| ApiError::Internal("the signed token is not UTF-8".into()))?
            .to_owned();
        Ok(Response::new(pb::LoginResponse {
            token,
            info: Some(info(&minted.record)),
        }))
    }

    async fn introspect(
        &self,
        req: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        let r = gated_introspection(
            &self.gate,
            &self.server,
            req.extensions(),
            req.get_ref().token.as_bytes(),
        )
        .await?;
        Ok(Response::new(r))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        let m = req.get_ref();
        let (resource, which): (Resource, Box<dyn Fn(&TokenRecord) -> bool + Send + Sync>) =
            match (m.jti.as_str(), m.grant.as_str(), m.subject.as_str()) {
                (jti, "", "") if !jti.is_empty() => {
                    let resource = Resource::new("token", Some(format!("jti:{jti}")));
                    let jti = Jti::new(jti);
                    (resource, Box::new(move |r| *r.jti() == jti))
                }
                ("", grant, "") if !grant.is_empty() => {
                    let grant = grant.to_owned();
                    (
                        Resource::new("token", Some(format!("grant:{grant}"))),
                        Box::new(move |r| r.jit_requests.contains(&grant)),
                    )
                }
                ("", "", subject) if !subject.is_empty() => {
                    let subject = subject.to_owned();
                    (
                        Resource::new("token", Some(format!("subject:{subject}"))),
                        Box::new(move |r| r.spiffe_id == subject),
                    )
                }
                _ => {
                    return Err(ApiError::InvalidArgument(
                        "give exactly one of jti, grant and subject".into(),
                    )
                    .into());
                }
            };
        self.gate
            .authorize(&req, Action::TokenRevoke, resource.clone())
            .await?;
        let revoked = revoke_tokens(&self.server, &*which).await;
        let said = match &revoked {
            Ok(jtis) if jtis.is_empty() => Ok("no live token matched".to_owned()),
            Ok(jtis) => Ok(format!("revoked {}", jtis.join(" "))),
            Err(e) => Err(e.to_string()),
        };
        self.gate
            .record_outcome(req.extensions(), Action::TokenRevoke, &resource, said)
            .await?;
        let revoked = revoked.map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(pb::RevokeTokensResponse { revoked }))
    }

    async fn login_oidc(
        &self,
        req: Request<pb::LoginOidcRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let (_, ext, msg) = req.into_parts();
        let jwt = Secret::from(msg.jwt);
        let issued = gated_login(&self.gate, &self.server, &ext, &msg.role, &jwt).await?;
        Ok(Response::new(pb::LoginResponse {
            token: String::from_utf8_lossy(issued.token.expose()).into_owned(),
            info: Some(info(&issued.record)),
        }))
    }

    async fn lookup_self(
        &self,
        req: Request<pb::LookupSelfRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let caller = self
            .gate
            .authorize(&req, Action::TokenLookupSelf, Resource::kind("token"))
            .await?;
        let record = presented(&caller)?;
        Ok(Response::new(info(&record)))
    }

    async fn revoke_self(
        &self,
        req: Request<pb::RevokeSelfRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let caller = self
            .gate
            .authorize(&req, Action::TokenRevokeSelf, Resource::kind("token"))
            .await?;
        let record = presented(&caller)?;
        let now = crate::clock::unix_seconds(self.server.now());
        let revoked = self
            .server
            .tokens()
            .revoke(&record, now)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(info(&revoked)))
    }
}

/// Revokes every live token `which` picks; their `jti`s.
pub(crate) async fn revoke_tokens(
    server: &Server,
    which: &(dyn Fn(&TokenRecord) -> bool + Send + Sync),
) -> Result<Vec<String>, TokenError> {
    let now = crate::clock::unix_seconds(server.now());
    server.tokens().revoke_matching(which, now).await
}

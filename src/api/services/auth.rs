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
use crate::server::TokenRecord;
use crate::server::login::{Issued, LoginRefused};
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
        jti: r.jti.clone(),
        spiffe_id: r.spiffe_id.clone(),
        role: r.role.clone(),
        issuer: r.source.clone(),
        grants: r.grants.clone(),
        issued_at: secs(r.issued_at),
        expires_at: secs(r.expires_at),
        revoked_at: r.revoked_at.map_or(0, secs),
    }
}

/// How a refused login answers: the JWT's fault is the caller's to fix.
pub(crate) fn refused(e: LoginRefused) -> ApiError {
    match e {
        LoginRefused::UnknownRole(_) | LoginRefused::Jwt(_) | LoginRefused::BadSubject { .. } => {
            ApiError::InvalidArgument(e.to_string())
        }
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
            i.record.jti, i.record.spiffe_id, i.record.expires_at
        )),
        Err(e) => Err(e.to_string()),
    };
    gate.record_outcome(ext, Action::AuthLogin, &resource, said)
        .await?;
    outcome.map_err(refused)
}

/// The token the caller presented, or why there is none.
pub(crate) fn presented(caller: &Caller) -> Result<Arc<TokenRecord>, ApiError> {
    match caller {
        Caller::Token { record, .. } => Ok(record.clone()),
        _ => Err(ApiError::Unauthenticated(
            "no live sigil token was presented (authorization: Bearer)".into(),
        )),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
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
            .revoke(&record.jti, now)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(info(&revoked)))
    }
}

//! The Vault-compatible HTTP API (SPEC §3.5): the subset of Vault's HTTP API
//! that CI tooling uses (`hashicorp/vault-action`, GitLab's `secrets:vault`,
//! the Vault CLI and client libraries), so a pipeline moves to sigil by
//! changing `VAULT_ADDR`.
//!
//! Routes, with Vault's JSON shapes and status codes:
//! - `POST|PUT /v1/auth/<mount>/login` — `{"role","jwt"}` → a sigil token
//!   in `auth.client_token` (the OIDC login of `sigil login oidc`);
//! - `GET /v1/<kv>/data/<path>[?version=N]`, `POST|PUT` the same to write
//!   (`options.cas`), `GET /v1/<kv>/metadata/<path>`, and listing by `LIST`
//!   or `GET ?list=true|1` on metadata, with or without a trailing slash;
//! - `GET /v1/auth/token/lookup-self`, `POST /v1/auth/token/revoke-self`;
//! - `GET|HEAD /v1/sys/health`.
//!
//! Every request passes the same gate and audit as gRPC: the token comes in
//! `X-Vault-Token` (or `Authorization: Bearer`) and is moved out of the
//! headers before anything else sees the request. Errors are
//! `{"errors":["…"]}` with Vault's codes.

#![allow(
    clippy::result_large_err,
    reason = "a handler's early exit is the response it answers with, built once"
)]

use crate::api::ApiError;
use crate::api::convert::introspection_json;
use crate::api::gate::Gate;
use crate::api::services::auth::{gated_introspection, gated_login, presented};
use crate::api::services::secrets::{gated_read, gated_write, secret};
use crate::net::Bearer;
use crate::policy::{Action, Resource};
use crate::secret::Secret;
use crate::secrets::{CustomMetadata, Fields, KvError, SecretPath, VersionMeta};
use crate::server::{SecretsError, Server};
use crate::tls::TlsConnInfo;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod threads;

/// The largest request body accepted (a KV write); larger gets 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;

/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct App {
    gate: Gate,
    server: Arc<Server>,
}

impl App {
    /// How a refused request answers: while sealed, everything but health
    /// is 503 as Vault answers it (the refusal is audited all the same).
    fn answer(&self, e: ApiError) -> Response {
        if matches!(e, ApiError::Denied(_) | ApiError::Unauthenticated(_))
            && self.server.is_sealed()
        {
            return api_error(ApiError::Sealed);
        }
        api_error(e)
    }
}

/// A response in Vault's error shape.
fn errors(status: StatusCode, messages: &[&str]) -> Response {
    (status, axum::Json(json!({ "errors": messages }))).into_response()
}

fn denied() -> Response {
    errors(StatusCode::FORBIDDEN, &["permission denied"])
}

/// Vault's response wrapper around `data` or `auth`, serialized straight
/// from typed parts (`()` is `null`).
#[derive(serde::Serialize)]
struct Wrapped<D, A> {
    request_id: String,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u64,
    data: D,
    wrap_info: (),
    warnings: (),
    auth: A,
}

fn wrapped<D: serde::Serialize, A: serde::Serialize>(data: D, auth: A) -> Wrapped<D, A> {
    Wrapped {
        request_id: request_id(),
        lease_id: "",
        renewable: false,
        lease_duration: 0,
        data,
        wrap_info: (),
        warnings: (),
        auth,
    }
}

/// A JSON answer written from typed data in one pass.
fn json_answer<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    // Sized for a typical answer, so writing it seldom reallocates.
    let mut bytes = Vec::with_capacity(512);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => (
            status,
            [(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "HTTP API answer could not be serialized");
            errors(StatusCode::INTERNAL_SERVER_ERROR, &["internal error"])
        }
    }
}

fn ok<D: serde::Serialize>(data: D) -> Response {
    json_answer(StatusCode::OK, &wrapped(data, ()))
}

/// A request's ID, unique within this process and unpredictable across
/// processes: a random prefix drawn once, and a counter.
fn request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut raw = [0u8; 10];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        let h = hex::encode(raw);
        // UUID-shaped, as Vault's clients print them.
        format!(
            "{}-{}-{}-{}-",
            h.get(..8).unwrap_or_default(),
            h.get(8..12).unwrap_or_default(),
            h.get(12..16).unwrap_or_default(),
            h.get(16..20).unwrap_or_default()
        )
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(prefix.len() + 12);
    id.push_str(prefix);
    // The counter as 12 lowercase hex digits, as `{:012x}` writes it,
    // without the formatter's cost on every answer.
    for shift in (0..12).rev() {
        let digit = (n >> (shift * 4)) & 0xf;
        id.push(char::from_digit(digit as u32, 16).unwrap_or('0'));
    }
    id
}

/// RFC 3339 UTC, as Vault writes times; "" for none.
fn time_text(unix: Option<u64>) -> String {
    unix.and_then(|t| i64::try_from(t).ok())
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// How an API error answers over HTTP.
fn api_error(e: ApiError) -> Response {
    match &e {
        ApiError::Denied(_) | ApiError::Unauthenticated(_) => denied(),
        ApiError::Sealed => errors(StatusCode::SERVICE_UNAVAILABLE, &["sigil is sealed"]),
        ApiError::InvalidArgument(m) => errors(StatusCode::BAD_REQUEST, &[m]),
        ApiError::Secrets(s) => secrets_error(s),
        ApiError::AuditUnavailable | ApiError::ShuttingDown => {
            errors(StatusCode::SERVICE_UNAVAILABLE, &[&e.to_string()])
        }
        _ => {
            tracing::error!(error = %e, "HTTP API request failed");
            errors(StatusCode::INTERNAL_SERVER_ERROR, &["internal error"])
        }
    }
}

fn secrets_error(e: &SecretsError) -> Response {
    match e {
        SecretsError::NotFound(_) => errors(StatusCode::NOT_FOUND, &[]),
        SecretsError::Kv(KvError::CasMismatch { .. }) => errors(
            StatusCode::BAD_REQUEST,
            &["check-and-set parameter did not match the current version"],
        ),
        SecretsError::Kv(KvError::NoSuchVersion { .. }) => errors(StatusCode::NOT_FOUND, &[]),
        SecretsError::Path(_)
        | SecretsError::Field(_)
        | SecretsError::Meta(_)
        | SecretsError::Kv(_) => errors(StatusCode::BAD_REQUEST, &[&e.to_string()]),
        _ => {
            tracing::error!(error = %e, "HTTP API secrets request failed");
            errors(StatusCode::INTERNAL_SERVER_ERROR, &["internal error"])
        }
    }
}

/// Reads the body, at most [`MAX_BODY`] bytes (413 beyond).
async fn body_bytes(body: Body) -> Result<Bytes, Response> {
    // A body whose declared length is already over the limit is refused
    // before a byte of it is read: the client that waits for the answer
    // before sending (or stops on it) gets the 413 instead of a reset.
    if http_body::Body::size_hint(&body).lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(errors(
            StatusCode::BAD_REQUEST,
            &["cannot read the request body"],
        )),
    }
}

fn too_large() -> Response {
    errors(
        StatusCode::PAYLOAD_TOO_LARGE,
        &["request body is larger than 1 MiB"],
    )
}

/// The body as a JSON object (clients send it without a content type).
async fn json_body(body: Body) -> Result<Map<String, Value>, Response> {
    let bytes = body_bytes(body).await?;
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(errors(
            StatusCode::BAD_REQUEST,
            &["request body is not a JSON object"],
        )),
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The seal state, for the public `sys` routes (`route` names the one
/// asked, for the audit log). A probe passes the gate like any request
/// (these routes are public, and answered while sealed).
async fn public_status(
    app: &App,
    ext: &http::Extensions,
    route: &str,
) -> Result<crate::store::SealStatus, Response> {
    if let Err(e) = app
        .gate
        .authorize_parts(
            ext,
            Action::Health,
            Resource::new("health", Some(route.to_owned())),
        )
        .await
    {
        return Err(app.answer(e));
    }
    app.server
        .status()
        .map_err(|_| errors(StatusCode::INTERNAL_SERVER_ERROR, &["internal error"]))
}

/// The version the `sys` routes report: semantic, as clients that compare
/// Vault versions parse it, with sigil named in its build metadata.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+sigil");

/// The cluster name the `sys` routes report.
const CLUSTER: &str = "sigil";

async fn health(State(app): State<App>, req: Request) -> Response {
    let status = match public_status(&app, req.extensions(), "sys/health").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let code = if !status.initialized {
        StatusCode::NOT_IMPLEMENTED
    } else if status.sealed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let now = crate::clock::unix_seconds(app.server.now());
    let body = json!({
        "initialized": status.initialized,
        "sealed": status.sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now,
        "version": VERSION,
        "cluster_name": CLUSTER,
    });
    (code, axum::Json(body)).into_response()
}

/// `GET /v1/sys/seal-status`, which `vault status` and hvac's `is_sealed`
/// read: always 200, the state in the body, as Vault answers. sigil unseals
/// with one passphrase, so once initialized the threshold and the share
/// count are 1 (0 before, as Vault shows them).
async fn seal_status(State(app): State<App>, req: Request) -> Response {
    let status = match public_status(&app, req.extensions(), "sys/seal-status").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let shares = u8::from(status.initialized);
    let mut body = json!({
        "type": "shamir",
        "initialized": status.initialized,
        "sealed": status.sealed,
        "t": shares,
        "n": shares,
        "progress": 0,
        "nonce": "",
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": "sled",
    });
    // Vault names its cluster only while unsealed.
    if !status.sealed
        && let Some(m) = body.as_object_mut()
    {
        m.insert("cluster_name".into(), json!(CLUSTER));
        m.insert(
            "cluster_id".into(),
            json!(status.trust_domain.unwrap_or_default()),
        );
    }
    json_answer(StatusCode::OK, &body)
}

/// `GET /v1/sys/leader`, which `vault status` reads after the seal state:
/// sigil runs as one server, without high availability.
async fn leader(State(app): State<App>, req: Request) -> Response {
    match public_status(&app, req.extensions(), "sys/leader").await {
        Ok(_) => json_answer(
            StatusCode::OK,
            &json!({
                "ha_enabled": false,
                "is_self": false,
                "active_time": "0001-01-01T00:00:00Z",
                "leader_address": "",
                "leader_cluster_address": "",
                "performance_standby": false,
                "performance_standby_last_remote_wal": 0,
            }),
        ),
        Err(r) => r,
    }
}

/// `GET /v1/sys/init`: whether the server is initialized (`sigil operator
/// init` does it; this API does not).
async fn init_status(State(app): State<App>, req: Request) -> Response {
    match public_status(&app, req.extensions(), "sys/init").await {
        Ok(s) => json_answer(StatusCode::OK, &json!({"initialized": s.initialized})),
        Err(r) => r,
    }
}

async fn login(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mount = parts
        .uri
        .path()
        .strip_prefix("/v1/auth/")
        .and_then(|p| p.strip_suffix("/login"))
        .unwrap_or_default()
        .to_owned();
    let oidc = &app.server.config().oidc;
    let Some(issuer) = oidc.issuers.iter().find(|i| i.mount == mount) else {
        return errors(StatusCode::NOT_FOUND, &["no handler for route"]);
    };
    let body = match json_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let (role, jwt) = (
        text("role").to_owned(),
        Secret::from(text("jwt").to_owned()),
    );
    if role.is_empty() || jwt.expose().is_empty() {
        return errors(StatusCode::BAD_REQUEST, &["missing role or jwt"]);
    }
    // A role of another issuer is not reachable through this mount. (A
    // name no role can have is refused by the login itself, unechoed.)
    if crate::server::login::role_name_ok(&role)
        && oidc.role(&role).is_some_and(|r| r.issuer != issuer.name)
    {
        return errors(
            StatusCode::BAD_REQUEST,
            &[&format!(
                "role {role:?} does not belong to auth mount {mount:?}"
            )],
        );
    }
    let issued = match gated_login(&app.gate, &app.server, &parts.extensions, &role, &jwt).await {
        Ok(i) => i,
        Err(e) => return app.answer(e),
    };
    let r = &issued.record;
    let auth = json!({
        "client_token": String::from_utf8_lossy(issued.token.expose()),
        "accessor": r.jti().to_string(),
        "policies": r.grants,
        "token_policies": r.grants,
        "metadata": {"role": r.role, "spiffe_id": r.spiffe_id},
        "lease_duration": r.expires_at.saturating_sub(r.issued_at),
        "renewable": false,
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
    });
    json_answer(StatusCode::OK, &wrapped((), auth))
}

/// The live token a token route's caller presented, or the refusal.
async fn token_caller(
    app: &App,
    ext: &http::Extensions,
    action: Action,
) -> Result<crate::server::TokenRecord, Response> {
    let caller = app
        .gate
        .authorize_parts(ext, action, Resource::kind("token"))
        .await
        .map_err(|e| app.answer(e))?;
    presented(&caller).map_err(|_| denied())
}

/// RFC 7662 introspection for resource servers: the caller authenticates
/// with a token of its own (`Authorization: Bearer` or `X-Vault-Token`);
/// the token asked about comes in the body, as the RFC's form
/// (`token=…`) or as JSON (`{"token": "…"}`). Answers the RFC's JSON
/// object, `{"active": false}` for anything not in force.
async fn introspect(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match body_bytes(body).await {
        Ok(b) => zeroize::Zeroizing::new(b.to_vec()),
        Err(r) => return r,
    };
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token: Option<zeroize::Zeroizing<String>> = if form {
        form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| zeroize::Zeroizing::new(v.into_owned()))
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_owned))
            .map(zeroize::Zeroizing::new)
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return errors(
            StatusCode::BAD_REQUEST,
            &["missing token: send token=… (form) or {\"token\": \"…\"}"],
        );
    };
    match gated_introspection(&app.gate, &app.server, &parts.extensions, token.as_bytes()).await {
        Ok(r) => json_answer(StatusCode::OK, &introspection_json(&r)),
        Err(e) => app.answer(e),
    }
}

async fn lookup_self(State(app): State<App>, req: Request) -> Response {
    let record = match token_caller(&app, req.extensions(), Action::TokenLookupSelf).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = crate::clock::unix_seconds(app.server.now());
    ok(json!({
        "accessor": record.jti().to_string(),
        "creation_time": record.issued_at,
        "creation_ttl": record.expires_at.saturating_sub(record.issued_at),
        "display_name": format!("{}-{}", record.source, record.role),
        "entity_id": "",
        "expire_time": time_text(Some(record.expires_at)),
        "explicit_max_ttl": 0,
        "id": "",
        "issue_time": time_text(Some(record.issued_at)),
        "meta": {"role": record.role, "spiffe_id": record.spiffe_id},
        "num_uses": 0,
        "orphan": true,
        "path": format!("auth/{}/login", record.source),
        "policies": record.grants,
        "renewable": false,
        "role": record.role,
        "ttl": record.expires_at.saturating_sub(now),
        "type": "service",
    }))
}

async fn revoke_self(State(app): State<App>, req: Request) -> Response {
    let record = match token_caller(&app, req.extensions(), Action::TokenRevokeSelf).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = crate::clock::unix_seconds(app.server.now());
    match app.server.tokens().revoke(&record, now).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => app.answer(ApiError::Internal(e.to_string())),
    }
}

/// Splits `/v1/<mount>/<kind>/<path>` where kind is `data` or `metadata`.
fn kv_route<'a>(path: &'a str, mount: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix("/v1/")?.strip_prefix(mount)?;
    let rest = rest.strip_prefix('/')?;
    let (kind, p) = match rest.split_once('/') {
        Some((k, p)) => (k, p),
        None => (rest, ""),
    };
    matches!(kind, "data" | "metadata").then_some((kind, p))
}

async fn kv(State(app): State<App>, req: Request) -> Response {
    let mount = app
        .server
        .config()
        .http
        .as_ref()
        .map_or("secret", |h| h.kv_mount.as_str())
        .to_owned();
    let uri_path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let Some((kind, raw_path)) = kv_route(&uri_path, &mount) else {
        return errors(StatusCode::NOT_FOUND, &["no handler for route"]);
    };
    let list_query = matches!(query_param(&query, "list"), Some("true" | "1"));
    let method = req.method().clone();
    let is_list = method.as_str() == "LIST" || (method == Method::GET && list_query);
    let path = raw_path.trim_end_matches('/').to_owned();
    let (parts, body) = req.into_parts();
    let ext = &parts.extensions;
    match (kind, is_list, &method) {
        ("metadata", true, _) => kv_list(&app, ext, &path).await,
        ("metadata", false, &Method::GET) => kv_meta(&app, ext, &path).await,
        ("data", false, &Method::GET) => {
            let version = match query_param(&query, "version").map(str::parse::<u64>) {
                None => 0,
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    return errors(StatusCode::BAD_REQUEST, &["version must be a number"]);
                }
            };
            kv_read(&app, ext, &path, version).await
        }
        ("data", false, &Method::POST | &Method::PUT) => kv_write(&app, ext, &path, body).await,
        _ => errors(StatusCode::METHOD_NOT_ALLOWED, &["method not allowed"]),
    }
}

fn parse_path(path: &str) -> Result<SecretPath, Response> {
    SecretPath::parse(path).map_err(|e| errors(StatusCode::BAD_REQUEST, &[&e.to_string()]))
}

/// KV v2's answer to a read.
#[derive(serde::Serialize)]
struct KvRead<'a> {
    data: ExposedFields<'a>,
    metadata: KvVersion<'a>,
}

/// One version's metadata, as KV v2 shows it; `previous` (sigil's own) is
/// on reads only.
#[derive(serde::Serialize)]
struct KvVersion<'a> {
    created_time: String,
    custom_metadata: Option<&'a std::collections::BTreeMap<String, String>>,
    deletion_time: String,
    destroyed: bool,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<bool>,
}

/// A read's fields as the JSON object the reader asked for. The values are
/// borrowed from the decrypted fields and written once, into the answer.
struct ExposedFields<'a>(&'a Fields);

impl serde::Serialize for ExposedFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, &String::from_utf8_lossy(v.expose()))?;
        }
        map.end()
    }
}

/// Custom metadata, `null` when there is none (as Vault shows it).
fn custom_pairs(custom: &CustomMetadata) -> Option<&std::collections::BTreeMap<String, String>> {
    Some(custom.pairs()).filter(|p| !p.is_empty())
}

fn version_meta(version: u64, m: &VersionMeta, custom: &CustomMetadata) -> Value {
    serde_json::to_value(KvVersion {
        created_time: time_text(Some(m.created)),
        custom_metadata: custom_pairs(custom),
        deletion_time: time_text(m.deleted),
        destroyed: m.destroyed.is_some(),
        version,
        previous: None,
    })
    .unwrap_or(Value::Null)
}

async fn kv_read(app: &App, ext: &http::Extensions, path: &str, version: u64) -> Response {
    let p = match parse_path(path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let now = crate::clock::unix_seconds(app.server.now());
    let act = app.server.secrets().get(&p, version, now);
    let read = gated_read(&app.gate, ext, Action::SecretGet, path, act, |r| {
        format!("read version {}", r.version)
    })
    .await;
    match read {
        Ok(r) => ok(KvRead {
            data: ExposedFields(&r.fields),
            metadata: KvVersion {
                created_time: time_text(Some(r.meta.created)),
                custom_metadata: custom_pairs(&r.custom),
                deletion_time: time_text(r.meta.deleted),
                destroyed: r.meta.destroyed.is_some(),
                version: r.version,
                previous: Some(r.previous),
            },
        }),
        // Vault answers a deleted or destroyed version with 404 and the
        // version's metadata, so clients can tell it from a missing secret.
        Err(ApiError::Secrets(SecretsError::Kv(
            KvError::Deleted { version, .. } | KvError::Destroyed { version, .. },
        ))) => {
            let Ok(meta) = app.server.secrets().meta(&p).await else {
                return errors(StatusCode::NOT_FOUND, &[]);
            };
            let metadata = meta.versions.get(&version).map_or_else(
                || {
                    json!({"created_time": "", "custom_metadata": null, "deletion_time": "",
                           "destroyed": true, "version": version})
                },
                |vm| version_meta(version, vm, &meta.custom),
            );
            json_answer(
                StatusCode::NOT_FOUND,
                &wrapped(json!({"data": null, "metadata": metadata}), ()),
            )
        }
        Err(e) => app.answer(e),
    }
}

async fn kv_meta(app: &App, ext: &http::Extensions, path: &str) -> Response {
    let p = match parse_path(path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let act = app.server.secrets().meta(&p);
    let meta = gated_read(&app.gate, ext, Action::SecretMeta, path, act, |m| {
        format!("metadata at version {}", m.current)
    })
    .await;
    let m = match meta {
        Ok(m) => m,
        Err(e) => return app.answer(e),
    };
    let versions: Map<String, Value> = m
        .versions
        .iter()
        .map(|(v, vm)| {
            (
                v.to_string(),
                json!({
                    "created_time": time_text(Some(vm.created)),
                    "deletion_time": time_text(vm.deleted),
                    "destroyed": vm.destroyed.is_some(),
                }),
            )
        })
        .collect();
    let custom: Value = if m.custom.pairs().is_empty() {
        Value::Null
    } else {
        json!(m.custom.pairs())
    };
    ok(json!({
        "cas_required": false,
        "created_time": time_text(Some(m.created)),
        "current_version": m.current,
        "custom_metadata": custom,
        "delete_version_after": "0s",
        "max_versions": m.max_versions,
        "oldest_version": m.oldest,
        "updated_time": time_text(Some(m.updated)),
        "versions": versions,
    }))
}

async fn kv_list(app: &App, ext: &http::Extensions, prefix: &str) -> Response {
    if !prefix.is_empty()
        && let Err(r) = parse_path(prefix)
    {
        return r;
    }
    let act = app.server.secrets().list(prefix);
    let all = gated_read(&app.gate, ext, Action::SecretList, prefix, act, |l| {
        format!("listed {} paths before filtering", l.len())
    })
    .await;
    let all = match all {
        Ok(a) => a,
        Err(e) => return app.answer(e),
    };
    // Vault lists the keys directly below the prefix, folders ending in
    // `/`; only what the caller may read counts.
    let mut keys = BTreeSet::new();
    for (p, _) in all {
        let full = p.to_string();
        let rest = if prefix.is_empty() {
            full.as_str()
        } else {
            match full.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
                Some(r) => r,
                None => continue,
            }
        };
        if !app
            .gate
            .permits(ext, Action::SecretGet, secret(full.as_str()))
        {
            continue;
        }
        match rest.split_once('/') {
            Some((dir, _)) => keys.insert(format!("{dir}/")),
            None => keys.insert(rest.to_owned()),
        };
    }
    if keys.is_empty() {
        return errors(StatusCode::NOT_FOUND, &[]);
    }
    ok(json!({ "keys": keys }))
}

async fn kv_write(app: &App, ext: &http::Extensions, path: &str, body: Body) -> Response {
    let p = match parse_path(path) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut body = match json_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let cas = match body.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    &["options.cas must be a non-negative integer"],
                );
            }
        },
    };
    let Some(Value::Object(data)) = body.remove("data") else {
        return errors(
            StatusCode::BAD_REQUEST,
            &["no data provided: the body must be {\"data\": {…}}"],
        );
    };
    // Values move into zeroizing buffers as they are taken; non-string
    // JSON values are stored as their JSON text, as Vault returns them.
    let mut fields = Vec::with_capacity(data.len());
    for (k, v) in data {
        let value = match v {
            Value::String(s) => Secret::from(s),
            other => Secret::from(other.to_string()),
        };
        fields.push((k, value));
    }
    let fields = match Fields::new(fields) {
        Ok(f) => f,
        Err(e) => return errors(StatusCode::BAD_REQUEST, &[&e.to_string()]),
    };
    let now = crate::clock::unix_seconds(app.server.now());
    let act = app.server.secrets().put(&p, fields, cas, now);
    let written = gated_write(&app.gate, ext, Action::SecretPut, path, act, |v| {
        format!("wrote version {v}")
    })
    .await;
    match written {
        Ok(version) => ok(json!({
            "created_time": time_text(Some(now)),
            "custom_metadata": null,
            "deletion_time": "",
            "destroyed": false,
            "version": version,
        })),
        Err(e) => app.answer(e),
    }
}

async fn method_not_allowed() -> Response {
    errors(StatusCode::METHOD_NOT_ALLOWED, &["method not allowed"])
}

/// The HTTP API's routes over `server`.
pub fn router(server: Arc<Server>) -> axum::Router {
    let app = App {
        gate: Gate::new(server.clone()),
        server,
    };
    axum::Router::new()
        .route("/v1/sys/health", get(health).head(health))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/init", get(init_status))
        .route("/v1/sys/leader", get(leader))
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route(
            "/v1/auth/token/revoke-self",
            post(revoke_self).put(revoke_self),
        )
        .route("/v1/auth/{mount}/login", post(login).put(login))
        .route("/v1/sigil/introspect", post(introspect))
        .fallback(any(kv))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// Where the HTTP API's TLS configuration comes from.
#[derive(Debug)]
pub enum HttpTls {
    /// An operator's certificate, loaded at start: served while sealed too.
    Fixed(Arc<rustls::ServerConfig>),
    /// The certificate sigil issues, present while unsealed.
    Issued(watch::Receiver<Option<Arc<rustls::ServerConfig>>>),
}

impl HttpTls {
    fn current(&self) -> Option<Arc<rustls::ServerConfig>> {
        match self {
            HttpTls::Fixed(c) => Some(c.clone()),
            HttpTls::Issued(w) => w.borrow().clone(),
        }
    }
}

/// Loads an operator-supplied certificate and key (the key file must be
/// mode 0600).
pub fn fixed_tls(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<HttpTls, String> {
    let chain_pem =
        std::fs::read(cert_file).map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let chain = crate::tls::certs_from_pem(&cert_file.display().to_string(), &chain_pem)
        .map_err(|e| e.to_string())?;
    let key_pem = crate::config::read_secret_file(key_file).map_err(|e| e.to_string())?;
    let key = crate::tls::key_from_pem(&key_file.display().to_string(), key_pem.expose())
        .map_err(|e| e.to_string())?;
    let config = crate::tls::https_single_cert_config(&chain, &key).map_err(|e| e.to_string())?;
    Ok(HttpTls::Fixed(Arc::new(config)))
}

/// A connection accepted and waiting for a thread to serve it.
struct Accepted {
    tcp: std::net::TcpStream,
    remote: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Serves the HTTP API on `listener` until `stop` turns true, then returns
/// once the connections it served have finished, or were cut off after
/// `grace`.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    tls: HttpTls,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let router = router(server);
    let mut threads = match threads::Threads::start(&router, &stop, grace).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the HTTP API's threads; it does not serve");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without a certificate (sealed, issued mode) there is nothing to
        // serve: the connection is closed at once.
        let Some(config) = tls.current() else {
            continue;
        };
        // At the cap, a connection is closed at once rather than waited
        // for: an accept loop stuck on a permit would stop noticing `stop`.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        // Answers are small and each is written whole: sending at once
        // beats waiting to coalesce (Nagle) with nothing else to send.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "HTTP API connection: cannot set TCP_NODELAY");
        }
        let tcp = match tcp.into_std() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP API connection could not be handed over");
                continue;
            }
        };
        let conn = Accepted {
            tcp,
            remote,
            config,
            permit,
        };
        if threads.give(conn).is_err() {
            tracing::error!("the HTTP API's threads have stopped; it no longer serves");
            break;
        }
    }
    drop(listener);
    threads.finish().await;
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(s)) => s,
            _ => return,
        },
        // A handshake still going when the server stops is abandoned.
        _ = stop.wait_for(|s| *s) => return,
    };
    let info = TlsConnInfo::new(Some(remote), None);
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let router = router.clone();
            req.extensions_mut().insert(info.clone());
            // The token leaves the headers before anything else sees them.
            Bearer::take(&mut req, "x-vault-token", None);
            Bearer::take(&mut req, "authorization", Some("Bearer"));
            async move {
                let req = req.map(Body::new);
                tower::ServiceExt::oneshot(router, req).await
            }
        });
    // A client must send each request's headers within HEADER_TIMEOUT of
    // the connection (or the previous response) being ready, so idle or
    // trickling connections cannot hold the listener's slots.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

//! Workload-side commands (SPEC §3.3) over the SPIFFE Workload API (SPEC
//! §3.1) at `SPIFFE_ENDPOINT_SOCKET`: fetch an X.509-SVID into files, fetch
//! JWT-SVIDs, validate a JWT-SVID.

use super::output::Out;
use super::{Failure, status_line};
use crate::api::workload as wpb;
use crate::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use crate::secret::Secret;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::path::PathBuf;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// The environment variable naming the Workload API socket (SPIFFE standard).
const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Why the Workload API endpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// `SPIFFE_ENDPOINT_SOCKET` is not set.
    #[error("SPIFFE_ENDPOINT_SOCKET is not set (e.g. unix:///run/sigil/agent.sock)")]
    Unset,
    /// The address is not a `unix:` URI.
    #[error("SPIFFE_ENDPOINT_SOCKET must be a unix: URI, got {0:?}")]
    NotUnix(String),
    /// The URI names a host, a query or a fragment.
    #[error("SPIFFE_ENDPOINT_SOCKET may not have a host, query or fragment: {0:?}")]
    ExtraParts(String),
    /// The socket path is not absolute.
    #[error("SPIFFE_ENDPOINT_SOCKET must name an absolute path: {0:?}")]
    NotAbsolute(String),
}

/// Parses `unix:///abs/path` or `unix:/abs/path` into the socket path.
pub fn parse_endpoint(uri: &str) -> Result<PathBuf, EndpointError> {
    let shown = || uri.chars().take(256).collect::<String>();
    let rest = uri
        .strip_prefix("unix:")
        .ok_or_else(|| EndpointError::NotUnix(shown()))?;
    let path = match rest.strip_prefix("//") {
        // An authority must be empty: `unix:///path`.
        Some(after) if after.starts_with('/') => after,
        Some(_) => return Err(EndpointError::ExtraParts(shown())),
        None => rest,
    };
    if path.contains(['?', '#']) {
        return Err(EndpointError::ExtraParts(shown()));
    }
    if !path.starts_with('/') {
        return Err(EndpointError::NotAbsolute(shown()));
    }
    Ok(PathBuf::from(path))
}

type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type Client = SpiffeWorkloadApiClient<InterceptedService<Channel, Interceptor>>;

/// Adds the header the Workload API requires on every request.
fn add_security_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    Ok(req)
}

/// The Workload API address from the environment.
fn endpoint_from_env() -> Result<String, Failure> {
    std::env::var(ENDPOINT_ENV).map_err(|_| Failure(EndpointError::Unset.to_string()))
}

async fn connect(uri: &str) -> Result<Client, Failure> {
    let path = parse_endpoint(uri)?;
    let shown = path.display().to_string();
    // The URI is a placeholder: the connector ignores it and dials the socket.
    let channel = Endpoint::from_static("http://workload.sock")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| {
            // tonic's own message is only "transport error"; the cause is below it.
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            Failure(format!(
                "cannot connect to the Workload API at {shown}: {cause}"
            ))
        })?;
    Ok(SpiffeWorkloadApiClient::with_interceptor(
        channel,
        add_security_header as Interceptor,
    ))
}

fn st(s: tonic::Status) -> Failure {
    Failure(status_line(&s))
}

/// `sigil svid fetch` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct SvidFetchArgs {
    /// Write svid.pem, key.pem (0600) and bundle.pem of the default SVID into DIR.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

/// `sigil jwt fetch` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct JwtFetchArgs {
    /// Audiences (at least one); the token's `aud` is exactly these.
    #[arg(long = "audience", required = true)]
    audience: Vec<String>,
    /// Only this identity (otherwise one token per identity).
    #[arg(long)]
    spiffe_id: Option<String>,
}

/// `sigil jwt validate` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct JwtValidateArgs {
    /// The audience the token must carry.
    #[arg(long)]
    audience: String,
    /// The JWT-SVID.
    token: String,
}

/// Fetches the default X.509-SVID (the first of the first snapshot).
pub(super) async fn svid_fetch(args: &SvidFetchArgs, out: &Out) -> Result<(), Failure> {
    svid_fetch_at(&endpoint_from_env()?, args, out).await
}

/// The default X.509-SVID: the first of the first snapshot.
async fn default_svid(uri: &str) -> Result<wpb::X509svid, Failure> {
    let mut stream = connect(uri)
        .await?
        .fetch_x509svid(wpb::X509svidRequest {})
        .await
        .map_err(st)?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(st)?
        .ok_or_else(|| Failure("the Workload API closed the stream without an SVID".into()))?;
    first
        .svids
        .into_iter()
        .next()
        .ok_or_else(|| Failure("the Workload API returned no SVID".into()))
}

async fn svid_fetch_at(uri: &str, args: &SvidFetchArgs, out: &Out) -> Result<(), Failure> {
    let svid = default_svid(uri).await?;
    let chain = split_der(&svid.x509_svid)?;
    let expires_at = chain.first().map(|leaf| not_after(leaf)).transpose()?;
    if let Some(dir) = &args.write {
        write_svid(&super::ops::svid_dir(dir)?, &chain, &svid)?;
    }
    out.print(
        &json!({
            "spiffe_id": svid.spiffe_id,
            "hint": svid.hint,
            "expires_at": expires_at,
            "dir": args.write.as_ref().map(|d| d.display().to_string()),
        }),
        || match &args.write {
            Some(dir) => format!(
                "{}\nwrote svid.pem, key.pem, bundle.pem to {}",
                svid.spiffe_id,
                dir.display()
            ),
            None => svid.spiffe_id.clone(),
        },
    );
    Ok(())
}

/// The caller's own X.509-SVID, fetched from the Workload API and held in
/// memory only: for authenticating to the server with no files on disk.
pub(super) struct WorkloadIdentity {
    /// Leaf first, DER.
    pub(super) chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub(super) key: crate::secret::Secret,
    /// The trust bundle of the SVID's trust domain, DER certificates.
    pub(super) bundle: Vec<Vec<u8>>,
}

/// Fetches the default X.509-SVID from the Workload API at `uri`.
pub(super) async fn fetch_identity(uri: &str) -> Result<WorkloadIdentity, Failure> {
    let mut svid = default_svid(uri).await?;
    Ok(WorkloadIdentity {
        chain: split_der(&svid.x509_svid)?,
        key: crate::secret::Secret::new(std::mem::take(&mut svid.x509_svid_key)),
        bundle: split_der(&svid.bundle)?,
    })
}

/// The Workload API address, if the environment names one.
pub(super) fn endpoint_if_set() -> Option<String> {
    std::env::var(ENDPOINT_ENV).ok().filter(|v| !v.is_empty())
}

fn write_svid(
    files: &crate::files::OutDir,
    chain: &[Vec<u8>],
    svid: &wpb::X509svid,
) -> Result<(), Failure> {
    let bundle = split_der(&svid.bundle)?;
    let key = Secret::from_slice(&svid.x509_svid_key);
    super::ops::write_svid_files(files, chain, &key, &bundle)
}

/// Splits concatenated DER certificates.
fn split_der(mut der: &[u8]) -> Result<Vec<Vec<u8>>, Failure> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Failure(format!("the Workload API sent a bad certificate: {e}")))?;
        let len = der.len() - rest.len();
        let (cert, _) = der.split_at(len);
        certs.push(cert.to_vec());
        der = rest;
    }
    Ok(certs)
}

fn not_after(leaf: &[u8]) -> Result<i64, Failure> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| Failure(format!("the Workload API sent a bad certificate: {e}")))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Fetches JWT-SVIDs and prints them, one token per line.
pub(super) async fn jwt_fetch(args: &JwtFetchArgs, out: &Out) -> Result<(), Failure> {
    jwt_fetch_at(&endpoint_from_env()?, args, out).await
}

async fn jwt_fetch_at(uri: &str, args: &JwtFetchArgs, out: &Out) -> Result<(), Failure> {
    // The agent checks the same limits; checking here too names the limit even for an
    // audience too large for a gRPC message, which the transport would refuse first.
    crate::authority::check_audiences(&args.audience)
        .map_err(|e| Failure(format!("--audience: {e}")))?;
    let r = connect(uri)
        .await?
        .fetch_jwtsvid(wpb::JwtsvidRequest {
            audience: args.audience.clone(),
            spiffe_id: args.spiffe_id.clone().unwrap_or_default(),
        })
        .await
        .map_err(st)?
        .into_inner();
    let svids: Vec<_> = r
        .svids
        .iter()
        .map(|s| json!({"spiffe_id": s.spiffe_id, "hint": s.hint, "token": s.svid}))
        .collect();
    out.print(&json!({ "svids": svids }), || {
        r.svids
            .iter()
            .map(|s| s.svid.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// Validates a JWT-SVID through the agent; an invalid token is a failure
/// naming the broken rule.
pub(super) async fn jwt_validate(args: &JwtValidateArgs, out: &Out) -> Result<(), Failure> {
    jwt_validate_at(&endpoint_from_env()?, args, out).await
}

async fn jwt_validate_at(uri: &str, args: &JwtValidateArgs, out: &Out) -> Result<(), Failure> {
    let r = connect(uri)
        .await?
        .validate_jwtsvid(wpb::ValidateJwtsvidRequest {
            audience: args.audience.clone(),
            svid: args.token.clone(),
        })
        .await
        .map_err(st)?
        .into_inner();
    let claims = r
        .claims
        .as_ref()
        .map(crate::agent::workload::claims::from_struct)
        .unwrap_or_default();
    let claims = serde_json::Value::Object(claims);
    out.print(
        &json!({"valid": true, "spiffe_id": r.spiffe_id, "claims": claims}),
        || {
            let pretty = serde_json::to_string_pretty(&claims).unwrap_or_default();
            format!("{}\n{pretty}", r.spiffe_id)
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            parse_endpoint("unix:///run/sigil/api.sock").unwrap(),
            PathBuf::from("/run/sigil/api.sock")
        );
        assert_eq!(
            parse_endpoint("unix:/tmp/a.sock").unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:8081"),
            Err(EndpointError::NotUnix("tcp://127.0.0.1:8081".into()))
        );
        assert_eq!(
            parse_endpoint("/tmp/a.sock"),
            Err(EndpointError::NotUnix("/tmp/a.sock".into()))
        );
        assert_eq!(
            parse_endpoint("unix://host/a.sock"),
            Err(EndpointError::ExtraParts("unix://host/a.sock".into()))
        );
        assert_eq!(
            parse_endpoint("unix:///a.sock?x=1"),
            Err(EndpointError::ExtraParts("unix:///a.sock?x=1".into()))
        );
        assert_eq!(
            parse_endpoint("unix:a.sock"),
            Err(EndpointError::NotAbsolute("unix:a.sock".into()))
        );
    }

    #[test]
    fn split_der_round_trips_a_chain() {
        let td = crate::id::TrustDomain::parse("example.org").unwrap();
        let now = std::time::SystemTime::now();
        let a = crate::authority::Authority::generate(
            &td,
            now,
            std::time::Duration::from_secs(3600),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let id = td.id("/w").unwrap();
        let (_, csr) = crate::authority::generate_key_and_csr(&id).unwrap();
        let svid = a
            .sign_x509_svid(&csr, &id, std::time::Duration::from_secs(60), &[], now)
            .unwrap();
        let certs = vec![svid.leaf_der.clone(), a.ca_cert_der().to_vec()];
        assert_eq!(split_der(&certs.concat()).unwrap(), certs);
        assert!(not_after(&svid.leaf_der).unwrap() > 0);
        let mut bad = certs.concat();
        bad.push(0x30);
        assert!(
            matches!(split_der(&bad), Err(Failure(m)) if m.starts_with("the Workload API sent a bad certificate"))
        );
    }

    mod against_agent {
        #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
        use super::super::*;
        use crate::agent::workload::tests::fixture::{Harness, entry};
        use std::os::unix::fs::PermissionsExt;

        const OUT: Out = Out { json: true };

        fn uri(h: &Harness) -> String {
            format!("unix://{}", h.socket.display())
        }

        #[tokio::test]
        async fn svid_fetch_writes_the_default_svid() {
            let h = Harness::start(vec![entry(1, "/web", "web"), entry(2, "/db", "")]).await;
            let dir = tempfile::tempdir().unwrap();
            let out_dir = dir.path().join("svid");
            let args = SvidFetchArgs {
                write: Some(out_dir.clone()),
            };
            svid_fetch_at(&uri(&h), &args, &OUT).await.unwrap();
            let chain = crate::tls::certs_from_pem(
                "svid",
                &std::fs::read(out_dir.join("svid.pem")).unwrap(),
            )
            .unwrap();
            let leaf = &chain[0];
            let id = crate::authority::validate_x509_svid_leaf(leaf, std::time::SystemTime::now())
                .unwrap();
            assert_eq!(id.as_str(), "spiffe://example.org/web");
            let key = std::fs::metadata(out_dir.join("key.pem")).unwrap();
            assert_eq!(key.permissions().mode() & 0o777, 0o600);
            let pem = std::fs::read(out_dir.join("key.pem")).unwrap();
            crate::tls::key_from_pem("key.pem", &pem).unwrap();
            let bundle = crate::tls::certs_from_pem(
                "bundle",
                &std::fs::read(out_dir.join("bundle.pem")).unwrap(),
            )
            .unwrap();
            assert_eq!(bundle, [h.provider.authority.ca_cert_der().to_vec()]);
        }

        #[tokio::test]
        async fn jwt_fetch_and_validate() {
            let h = Harness::start(vec![entry(1, "/web", "")]).await;
            let fetch = JwtFetchArgs {
                audience: vec!["a".into()],
                spiffe_id: None,
            };
            jwt_fetch_at(&uri(&h), &fetch, &OUT).await.unwrap();
            let id = crate::id::SpiffeId::parse("spiffe://example.org/web").unwrap();
            let t = h
                .provider
                .authority
                .mint_jwt_svid(
                    &id,
                    &["a".into()],
                    std::time::Duration::from_secs(60),
                    std::time::SystemTime::now(),
                )
                .unwrap();
            let good = JwtValidateArgs {
                audience: "a".into(),
                token: t.token_str().to_owned(),
            };
            jwt_validate_at(&uri(&h), &good, &OUT).await.unwrap();
            let bad = JwtValidateArgs {
                audience: "a".into(),
                token: "not.a.token".into(),
            };
            let Failure(msg) = jwt_validate_at(&uri(&h), &bad, &OUT).await.unwrap_err();
            assert!(
                msg.starts_with("invalid argument: invalid JWT-SVID"),
                "{msg}"
            );
            let missing = format!("unix://{}", h.socket.with_file_name("none.sock").display());
            let Failure(msg) = jwt_fetch_at(&missing, &fetch, &OUT).await.unwrap_err();
            assert!(
                msg.starts_with("cannot connect to the Workload API"),
                "{msg}"
            );
        }
    }

    proptest! {
        #[test]
        fn absolute_paths_round_trip(p in "(/[a-z0-9._-]{1,12}){1,5}") {
            prop_assert_eq!(parse_endpoint(&format!("unix://{p}")).unwrap(), PathBuf::from(&p));
            prop_assert_eq!(parse_endpoint(&format!("unix:{p}")).unwrap(), PathBuf::from(&p));
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = parse_endpoint(&s);
        }
    }
}

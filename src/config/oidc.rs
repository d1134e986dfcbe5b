//! `[[oidc.issuer]]` and `[[oidc.role]]` of `server.toml`: the CI platforms
//! whose OIDC tokens sigil accepts at login, and what each role gets.
//!
//! ```toml
//! [[oidc.issuer]]
//! name = "github"
//! issuer = "https://token.actions.githubusercontent.com"
//! jwks_file = "/etc/sigil/github-jwks.json"   # or jwks_url = "https://…"
//!                                             # (ca_file = PEM roots for it)
//! audiences = ["sigil"]
//! algorithms = ["RS256", "ES256"]
//!
//! [[oidc.role]]
//! name = "deploy"
//! issuer = "github"
//! bound_claims = { repository = "acme/app", ref = "refs/heads/main" }
//! spiffe_id = "spiffe://example.org/ci/{repository}"
//! grants = ["read:ci/app/*"]
//! ttl = "15m"
//! ```

use super::ConfigError;
use crate::id::{SpiffeId, TrustDomain, Ttl};
use crate::oidc::Algorithm;
use crate::secrets::Grant;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most clock skew an issuer may be allowed, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// The longest a login token may live.
pub const MAX_ROLE_TTL: u64 = 12 * 3600;

/// `[oidc]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    #[serde(default)]
    issuer: Vec<RawIssuer>,
    #[serde(default)]
    role: Vec<RawRole>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    issuer: String,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    ca_file: Option<PathBuf>,
    audiences: Vec<String>,
    algorithms: Option<Vec<String>>,
    mount: Option<String>,
    leeway: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    issuer: String,
    #[serde(default)]
    bound_claims: BTreeMap<String, String>,
    spiffe_id: String,
    grants: Vec<String>,
    ttl: Option<String>,
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk, read at the first login, and again when a
    /// token names a key it does not hold (at most once per
    /// `REFRESH_EVERY`).
    File(PathBuf),
    /// A JWKS URL (https), fetched at the first login, cached, and fetched
    /// again when a token names a key it does not hold (at most once per
    /// `REFRESH_EVERY`).
    Url {
        /// The URL.
        url: String,
        /// PEM roots to trust for it instead of the system's (a platform
        /// behind a private CA, such as a self-hosted GitLab).
        ca_file: Option<PathBuf>,
    },
}

/// A checked `[[oidc.issuer]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIssuer {
    /// The name roles refer to.
    pub name: String,
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// Its keys.
    pub jwks: JwksSource,
    /// A token's `aud` must include one of these.
    pub audiences: Vec<String>,
    /// The signature algorithms accepted (default RS256 and ES256).
    pub algorithms: Vec<Algorithm>,
    /// The HTTP API's login path is `/v1/auth/<mount>/login` (default `jwt`).
    pub mount: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, seconds (default 60).
    pub leeway_secs: u64,
}

/// A checked `[[oidc.role]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcRole {
    /// The name a login asks for.
    pub name: String,
    /// The issuer (by name) whose tokens may log in to it.
    pub issuer: String,
    /// Claims a token must carry: exact, or a glob when ending in `*`.
    pub bound_claims: BTreeMap<String, String>,
    /// The token's SPIFFE ID, with `{claim}` placeholders.
    pub spiffe_id: String,
    /// What the token may do.
    pub grants: Vec<String>,
    /// How long the token lives (default 15m, at most 12h).
    pub ttl: Ttl,
}

/// A checked `[oidc]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuers.
    pub issuers: Vec<OidcIssuer>,
    /// The roles.
    pub roles: Vec<OidcRole>,
}

impl OidcConfig {
    /// The issuer named `name`.
    pub fn issuer(&self, name: &str) -> Option<&OidcIssuer> {
        self.issuers.iter().find(|i| i.name == name)
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&OidcRole> {
        self.roles.iter().find(|r| r.name == name)
    }
}

fn invalid(path: &Path, key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    }
}

/// A name used in paths and messages: `[A-Za-z0-9_.-]`, 1 to 64 bytes.
fn check_name(path: &Path, key: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            key,
            format!("{name:?}: use 1 to 64 of A-Z a-z 0-9 _ . -"),
        ))
    }
}

impl RawOidc {
    pub(super) fn check(
        self,
        path: &Path,
        trust_domain: &TrustDomain,
        resolve: impl Fn(PathBuf) -> PathBuf,
    ) -> Result<OidcConfig, ConfigError> {
        let mut issuers = Vec::new();
        let mut mounts = BTreeSet::new();
        for raw in self.issuer {
            check_name(path, "oidc.issuer.name", &raw.name)?;
            let named = |m: &str| format!("issuer {:?}: {m}", raw.name);
            if issuers.iter().any(|i: &OidcIssuer| i.name == raw.name) {
                return Err(invalid(path, "oidc.issuer.name", named("defined twice")));
            }
            if raw.issuer.is_empty() {
                return Err(invalid(path, "oidc.issuer.issuer", named("is empty")));
            }
            if raw.ca_file.is_some() && raw.jwks_url.is_none() {
                return Err(invalid(
                    path,
                    "oidc.issuer.ca_file",
                    named("ca_file is for jwks_url"),
                ));
            }
            let jwks = match (raw.jwks_file, raw.jwks_url) {
                (Some(file), None) => JwksSource::File(resolve(file)),
                (None, Some(url)) => {
                    if !url.starts_with("https://") {
                        return Err(invalid(
                            path,
                            "oidc.issuer.jwks_url",
                            named("must be an https:// URL"),
                        ));
                    }
                    crate::config::EndpointUrl::parse(&url).map_err(|e| {
                        invalid(
                            path,
                            "oidc.issuer.jwks_url",
                            named(&format!("{url:?}: {e}")),
                        )
                    })?;
                    JwksSource::Url {
                        url,
                        ca_file: raw.ca_file.map(&resolve),
                    }
                }
                _ => {
                    return Err(invalid(
                        path,
                        "oidc.issuer",
                        named("set exactly one of jwks_file or jwks_url"),
                    ));
                }
            };
            if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
                return Err(invalid(
                    path,
                    "oidc.issuer.audiences",
                    named("list at least one audience, none empty"),
                ));
            }
            let algorithms = match raw.algorithms {
                None => vec![Algorithm::Rs256, Algorithm::Es256],
                Some(names) if names.is_empty() => {
                    return Err(invalid(
                        path,
                        "oidc.issuer.algorithms",
                        named("list at least one algorithm"),
                    ));
                }
                Some(names) => names
                    .iter()
                    .map(|n| n.parse::<Algorithm>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(path, "oidc.issuer.algorithms", named(&e.to_string())))?,
            };
            let mount = raw.mount.unwrap_or_else(|| "jwt".to_owned());
            check_name(path, "oidc.issuer.mount", &mount)?;
            if !mounts.insert(mount.clone()) {
                return Err(invalid(
                    path,
                    "oidc.issuer.mount",
                    named(&format!("mount {mount:?} is used by another issuer")),
                ));
            }
            let leeway_secs = match raw.leeway {
                None => crate::oidc::DEFAULT_LEEWAY_SECS,
                Some(l) => Ttl::parse(&l)
                    .map_err(|e| invalid(path, "oidc.issuer.leeway", named(&e.to_string())))?
                    .as_secs(),
            };
            if leeway_secs > MAX_LEEWAY_SECS {
                return Err(invalid(
                    path,
                    "oidc.issuer.leeway",
                    named("must be at most 5m: it is clock skew, not a lifetime"),
                ));
            }
            issuers.push(OidcIssuer {
                name: raw.name,
                issuer: raw.issuer,
                jwks,
                audiences: raw.audiences,
                algorithms,
                mount,
                leeway_secs,
            });
        }
        let mut roles: Vec<OidcRole> = Vec::new();
        for raw in self.role {
            check_name(path, "oidc.role.name", &raw.name)?;
            let named = |m: &str| format!("role {:?}: {m}", raw.name);
            if roles.iter().any(|r| r.name == raw.name) {
                return Err(invalid(path, "oidc.role.name", named("defined twice")));
            }
            if !issuers.iter().any(|i| i.name == raw.issuer) {
                return Err(invalid(
                    path,
                    "oidc.role.issuer",
                    named(&format!("no [[oidc.issuer]] is named {:?}", raw.issuer)),
                ));
            }
            // An issuer such as GitHub's signs tokens for every repository
            // on the platform, and the audience is the workflow's choice: a
            // role that binds no claim would let any of them in.
            if raw.bound_claims.is_empty() {
                return Err(invalid(
                    path,
                    "oidc.role.bound_claims",
                    named(
                        "bind at least one claim (e.g. repository or project_path): the issuer signs tokens for every project on its platform",
                    ),
                ));
            }
            if let Some((claim, _)) = raw
                .bound_claims
                .iter()
                .find(|(_, v)| v.chars().all(|c| c == '*'))
            {
                return Err(invalid(
                    path,
                    "oidc.role.bound_claims",
                    named(&format!("{claim:?} matches anything; bind a value")),
                ));
            }
            check_spiffe_template(&raw.spiffe_id, trust_domain)
                .map_err(|m| invalid(path, "oidc.role.spiffe_id", named(&m)))?;
            if raw.grants.is_empty() {
                return Err(invalid(
                    path,
                    "oidc.role.grants",
                    named("list at least one grant"),
                ));
            }
            for g in &raw.grants {
                Grant::parse(g).map_err(|e| {
                    invalid(path, "oidc.role.grants", named(&format!("{g:?}: {e}")))
                })?;
            }
            let ttl = Ttl::parse(raw.ttl.as_deref().unwrap_or("15m"))
                .map_err(|e| invalid(path, "oidc.role.ttl", named(&e.to_string())))?;
            if ttl.as_secs() > MAX_ROLE_TTL {
                return Err(invalid(
                    path,
                    "oidc.role.ttl",
                    named("must be at most 12h: a login token is short-lived"),
                ));
            }
            roles.push(OidcRole {
                name: raw.name,
                issuer: raw.issuer,
                bound_claims: raw.bound_claims,
                spiffe_id: raw.spiffe_id,
                grants: raw.grants,
                ttl,
            });
        }
        Ok(OidcConfig { issuers, roles })
    }
}

/// A role's `spiffe_id`: placeholders well formed, and with each replaced by
/// a sample value, a workload ID of this trust domain.
fn check_spiffe_template(template: &str, td: &TrustDomain) -> Result<(), String> {
    let names = crate::oidc::check_template(template).map_err(|e| e.to_string())?;
    let mut sample = template.to_owned();
    for n in &names {
        sample = sample.replace(&format!("{{{n}}}"), "x");
    }
    let id = SpiffeId::parse(&sample).map_err(|e| format!("{template:?}: {e}"))?;
    if id.trust_domain_str() != td.as_str() {
        return Err(format!("{template:?} is not in trust domain {td}"));
    }
    if id.path().is_empty() || id.agent_name().is_some() || id.path().starts_with("/sigil/") {
        return Err(format!(
            "{template:?} must name a workload (not the trust domain or a sigil/ identity)"
        ));
    }
    Ok(())
}

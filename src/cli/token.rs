//! `sigil login oidc` and `sigil token` (SPEC §3.3): trade a CI platform's
//! OIDC JWT for a sigil token; look up or revoke the token in `SIGIL_TOKEN`.
//!
//! The token is printed once, on standard output, for the job to keep in
//! its environment; it is never written to a file or a log.

use super::agents::time_text;
use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;

/// The largest JWT file read.
const MAX_JWT_FILE: u64 = 64 * 1024;

#[derive(Debug, Subcommand)]
pub(super) enum LoginCmd {
    /// Log in with a CI platform's OIDC JWT; prints a sigil token.
    Oidc {
        /// The role to log in to (`[[oidc.role]]` in server.toml).
        #[arg(long)]
        role: String,
        /// File holding the JWT, or `-` for standard input.
        #[arg(long, value_name = "FILE")]
        jwt_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCmd {
    /// Show the token in SIGIL_TOKEN: its SPIFFE ID, role, grants, expiry.
    Lookup,
    /// Revoke now: with no option, the token in SIGIL_TOKEN; with one,
    /// every token it names (operators and admin workloads).
    Revoke {
        /// The token with this jti.
        #[arg(long, conflicts_with_all = ["grant", "subject"])]
        jti: Option<String>,
        /// Every token relying on this JIT request.
        #[arg(long, value_name = "JIT_ID", conflicts_with = "subject")]
        grant: Option<String>,
        /// Every token held by this SPIFFE ID.
        #[arg(long, value_name = "SPIFFE_ID")]
        subject: Option<String>,
    },
    /// Mint a token for yourself (over mTLS), bound to your certificate,
    /// carrying scopes you hold (standing grants or active JIT grants).
    Mint {
        /// A scope, VERB:PATTERN (repeat for more).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// The audience the token is for (`sigil` for sigil's own API).
        #[arg(long)]
        audience: String,
        /// Lifetime (`15m` by default, at most `12h`; never past a JIT grant
        /// it needs).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Ask whether a token is in force (RFC 7662): prints `active` and its
    /// claims.
    Introspect {
        /// The token, or `-` to read it from standard input.
        token: String,
    },
}

fn read_jwt(path: &PathBuf) -> Result<String, Failure> {
    use std::io::Read;
    let mut text = String::new();
    let shown = path.display();
    let result = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_JWT_FILE)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_JWT_FILE).read_to_string(&mut text))
    };
    result.map_err(|e| Failure(format!("cannot read {shown}: {e}")))?;
    let jwt = text.trim().to_owned();
    if jwt.is_empty() {
        return Err(Failure(format!("{shown} is empty: expected an OIDC JWT")));
    }
    Ok(jwt)
}

fn info_json(i: &pb::TokenInfo) -> serde_json::Value {
    json!({
        "jti": i.jti,
        "spiffe_id": i.spiffe_id,
        "role": i.role,
        "issuer": i.issuer,
        "grants": i.grants,
        "issued_at": time_text(i.issued_at),
        "expires_at": time_text(i.expires_at),
        "revoked_at": (i.revoked_at != 0).then(|| time_text(i.revoked_at)),
    })
}

fn info_text(i: &pb::TokenInfo) -> String {
    let mut s = format!(
        "jti        {}\nspiffe_id  {}\nrole       {} (issuer {})\ngrants     {}\nexpires    {}\n",
        i.jti,
        i.spiffe_id,
        i.role,
        i.issuer,
        i.grants.join(" "),
        time_text(i.expires_at)
    );
    if i.revoked_at != 0 {
        s.push_str(&format!("revoked    {}\n", time_text(i.revoked_at)));
    }
    s
}

pub(super) async fn login(cli: &Cli, cmd: &LoginCmd, out: &Out) -> Result<(), Failure> {
    let LoginCmd::Oidc { role, jwt_file } = cmd;
    let jwt = read_jwt(jwt_file)?;
    let mut c = cli.clients().await?.auth;
    let r = c
        .login_oidc(pb::LoginOidcRequest {
            role: role.clone(),
            jwt,
        })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    print_issued(out, &r.token, &r.info.unwrap_or_default(), Vec::new());
    Ok(())
}

/// Prints an issued token: alone, or with `--json` beside its record and
/// the `extra` fields.
fn print_issued(
    out: &Out,
    token: &str,
    info: &pb::TokenInfo,
    extra: Vec<(&str, serde_json::Value)>,
) {
    if out.json {
        let mut v = info_json(info);
        if let Some(m) = v.as_object_mut() {
            m.insert("token".into(), json!(token));
            for (k, x) in extra {
                m.insert(k.into(), x);
            }
        }
        out.print(&v, String::new);
    } else {
        println!("{token}");
    }
}

pub(super) async fn token(cli: &Cli, cmd: &TokenCmd, out: &Out) -> Result<(), Failure> {
    let st = |s: tonic::Status| Failure(status_line(&s));
    match cmd {
        TokenCmd::Mint {
            scopes,
            audience,
            ttl,
        } => return mint(cli, scopes, audience, ttl.as_deref(), out).await,
        TokenCmd::Introspect { token } => return introspect(cli, token, out).await,
        TokenCmd::Revoke {
            jti,
            grant,
            subject,
        } if jti.is_some() || grant.is_some() || subject.is_some() => {
            let mut c = cli.clients().await?.auth;
            let revoked = c
                .revoke(pb::RevokeTokensRequest {
                    jti: jti.clone().unwrap_or_default(),
                    grant: grant.clone().unwrap_or_default(),
                    subject: subject.clone().unwrap_or_default(),
                })
                .await
                .map_err(st)?
                .into_inner()
                .revoked;
            out.print(&json!({ "revoked": revoked }), || {
                if revoked.is_empty() {
                    "no live token matched".to_owned()
                } else {
                    format!("revoked {}", revoked.join(" "))
                }
            });
            return Ok(());
        }
        _ => {}
    }
    if std::env::var_os(super::TOKEN_ENV).is_none() {
        return Err(Failure(format!(
            "set {} to the token to {}",
            super::TOKEN_ENV,
            match cmd {
                TokenCmd::Lookup => "look up",
                _ => "revoke",
            }
        )));
    }
    let mut c = cli.clients().await?.auth;
    let lookup = matches!(cmd, TokenCmd::Lookup);
    let info = if lookup {
        c.lookup_self(pb::LookupSelfRequest {}).await.map_err(st)?
    } else {
        c.revoke_self(pb::RevokeSelfRequest {}).await.map_err(st)?
    }
    .into_inner();
    out.print(&info_json(&info), || {
        if lookup {
            info_text(&info)
        } else {
            format!("revoked token {}", info.jti)
        }
    });
    Ok(())
}

async fn mint(
    cli: &Cli,
    scopes: &[String],
    audience: &str,
    ttl: Option<&str>,
    out: &Out,
) -> Result<(), Failure> {
    let ttl = match ttl {
        Some(t) => crate::id::Ttl::parse(t)
            .map_err(|e| Failure(format!("error: --ttl: {e}")))?
            .as_secs(),
        None => 0,
    };
    let mut c = cli.clients().await?.auth;
    let r = c
        .mint(pb::MintTokenRequest {
            scopes: scopes.to_vec(),
            audience: audience.to_owned(),
            ttl_seconds: i64::try_from(ttl).unwrap_or(i64::MAX),
        })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    let info = r.info.unwrap_or_default();
    let extra = vec![
        ("audience", json!(info.audience)),
        ("cnf", json!({"x5t#S256": info.cnf_x5t_s256})),
        ("jit_requests", json!(info.jit_requests)),
    ];
    print_issued(out, &r.token, &info, extra);
    Ok(())
}

async fn introspect(cli: &Cli, token: &str, out: &Out) -> Result<(), Failure> {
    let token = if token == "-" {
        read_jwt(&PathBuf::from("-"))?
    } else {
        token.to_owned()
    };
    let mut c = cli.clients().await?.auth;
    let r = c
        .introspect(pb::IntrospectRequest { token })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    let v = crate::api::convert::introspection_json(&r);
    // Always JSON: it is the RFC's answer.
    out.print(&v, || serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

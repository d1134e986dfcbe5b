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
    /// Revoke the token in SIGIL_TOKEN now.
    Revoke,
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
    let info = r.info.unwrap_or_default();
    if out.json {
        let mut v = info_json(&info);
        if let Some(m) = v.as_object_mut() {
            m.insert("token".into(), json!(r.token));
        }
        out.print(&v, String::new);
    } else {
        println!("{}", r.token);
    }
    Ok(())
}

pub(super) async fn token(cli: &Cli, cmd: &TokenCmd, out: &Out) -> Result<(), Failure> {
    if std::env::var_os(super::TOKEN_ENV).is_none() {
        return Err(Failure(format!(
            "set {} to the token to {}",
            super::TOKEN_ENV,
            match cmd {
                TokenCmd::Lookup => "look up",
                TokenCmd::Revoke => "revoke",
            }
        )));
    }
    let mut c = cli.clients().await?.auth;
    let st = |s: tonic::Status| Failure(status_line(&s));
    let info = match cmd {
        TokenCmd::Lookup => c.lookup_self(pb::LookupSelfRequest {}).await.map_err(st)?,
        TokenCmd::Revoke => c.revoke_self(pb::RevokeSelfRequest {}).await.map_err(st)?,
    }
    .into_inner();
    out.print(&info_json(&info), || match cmd {
        TokenCmd::Lookup => info_text(&info),
        TokenCmd::Revoke => format!("revoked token {}", info.jti),
    });
    Ok(())
}

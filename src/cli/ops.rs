//! Operator, bundle, SVID, JWT, policy and audit commands.

use super::audit_report::Summary;
use super::keys::{keys_json, keys_text, rotate, taint};
use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use crate::api::pb::SigningKeyKind;
use crate::files::{Access, OutDir};
use crate::id::{SpiffeId, Ttl};
use crate::secret::Secret;
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub(super) enum OperatorCmd {
    /// Create the key hierarchy and the CA (the server is unsealed after).
    Init(PassphraseArgs),
    /// Unseal the store.
    Unseal(UnsealArgs),
    /// Seal the store: every key leaves memory.
    Seal,
    /// Show whether the store is initialized and sealed.
    Status,
    /// Add a new data-key version.
    RotateKeys,
    /// Rotate the CA now: a new CA is published at once and signs as soon as
    /// every agent has had it for the publish window. With --force it signs at
    /// once (after a compromise: peers that have not received it yet fail to
    /// verify SVIDs it signs until they do).
    RotateCa {
        /// Sign with the new CA at once.
        #[arg(long)]
        force: bool,
    },
    /// Rotate the JWT signing key now, like rotate-ca.
    RotateJwtKey {
        /// Sign with the new key at once.
        #[arg(long)]
        force: bool,
    },
    /// Mark a CA key compromised (its id as `bundle show --format keys` lists
    /// it): it never signs again, is replaced at once if it was active, agents
    /// re-issue every SVID it signed, and it leaves the bundle after
    /// [ca] taint_grace.
    TaintCa {
        /// The CA key's id (hex SubjectKeyIdentifier).
        key_id: String,
    },
    /// Mark a JWT signing key compromised, like taint-ca.
    TaintJwtKey {
        /// The key's `kid`.
        key_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub(super) struct PassphraseArgs {
    /// File holding the passphrase (mode 0600). Otherwise
    /// $SIGIL_UNSEAL_PASSPHRASE, otherwise standard input.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(super) struct UnsealArgs {
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Accept a store older than the audit log: only after restoring the
    /// store from a backup on purpose. The acceptance is audited.
    #[arg(long)]
    accept_rollback: bool,
}

/// Reads the passphrase from the file, the environment or standard input.
pub(super) fn read_passphrase(file: Option<&Path>) -> Result<Secret, Failure> {
    if let Some(f) = file {
        return Ok(crate::config::read_secret_file(f)?);
    }
    if std::env::var_os("SIGIL_UNSEAL_PASSPHRASE").is_some() {
        return Ok(crate::config::read_secret_env("SIGIL_UNSEAL_PASSPHRASE")?);
    }
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
    let mut bytes = buf.to_vec();
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Failure(
            "no passphrase: use --passphrase-file, $SIGIL_UNSEAL_PASSPHRASE or standard input"
                .into(),
        ));
    }
    Ok(Secret::new(bytes))
}

pub(super) async fn operator(cli: &Cli, cmd: &OperatorCmd, out: &Out) -> Result<(), Failure> {
    let mut c = cli.clients().await?.operator;
    let st = |s: tonic::Status| Failure(status_line(&s));
    match cmd {
        OperatorCmd::Init(a) => {
            let p = read_passphrase(a.passphrase_file.as_deref())?;
            let r = c
                .init(pb::InitRequest {
                    passphrase: p.expose().to_vec(),
                })
                .await
                .map_err(st)?
                .into_inner();
            out.print(
                &json!({"initialized": true, "sealed": false, "trust_domain": r.trust_domain}),
                || format!("initialized trust domain {} (unsealed)", r.trust_domain),
            );
        }
        OperatorCmd::Unseal(a) => {
            let p = read_passphrase(a.passphrase.passphrase_file.as_deref())?;
            c.unseal(pb::UnsealRequest {
                passphrase: p.expose().to_vec(),
                accept_rollback: a.accept_rollback,
            })
            .await
            .map_err(st)?;
            out.print(&json!({"sealed": false}), || "unsealed".into());
        }
        OperatorCmd::Seal => {
            c.seal(pb::SealRequest {}).await.map_err(st)?;
            out.print(&json!({"sealed": true}), || "sealed".into());
        }
        OperatorCmd::Status => {
            let r = c
                .status(pb::StatusRequest {})
                .await
                .map_err(st)?
                .into_inner();
            let federation: Vec<serde_json::Value> = r
                .federation
                .iter()
                .map(super::federation::status_json)
                .collect();
            let v = json!({
                "initialized": r.initialized,
                "sealed": r.sealed,
                "trust_domain": r.trust_domain,
                "key_versions": r.key_versions,
                "active_key_version": r.active_key_version,
                "federation": federation,
                "authority_keys": keys_json(&r.authority_keys),
                "rotation_failures": r.rotation_failures,
            });
            out.print(&v, || {
                let mut text = format!(
                    "initialized: {}\nsealed: {}\ntrust domain: {}\nkey versions: {:?} (active {})",
                    r.initialized, r.sealed, r.trust_domain, r.key_versions, r.active_key_version
                );
                if !r.authority_keys.is_empty() {
                    text.push_str(&format!(
                        "\nkey rotation failures: {}\n{}",
                        r.rotation_failures,
                        keys_text(&r.authority_keys)
                    ));
                }
                if !r.federation.is_empty() {
                    text.push_str("\nfederation:");
                }
                for s in &r.federation {
                    text.push('\n');
                    text.push_str(&super::federation::status_text(s));
                }
                text
            });
        }
        OperatorCmd::RotateCa { force } => {
            rotate(&mut c, SigningKeyKind::X509Ca, *force, out).await?
        }
        OperatorCmd::RotateJwtKey { force } => {
            rotate(&mut c, SigningKeyKind::Jwt, *force, out).await?
        }
        OperatorCmd::TaintCa { key_id } => {
            taint(&mut c, SigningKeyKind::X509Ca, key_id, out).await?
        }
        OperatorCmd::TaintJwtKey { key_id } => {
            taint(&mut c, SigningKeyKind::Jwt, key_id, out).await?
        }
        OperatorCmd::RotateKeys => {
            let r = c
                .rotate_keys(pb::RotateKeysRequest {})
                .await
                .map_err(st)?
                .into_inner();
            out.print(&json!({"active_key_version": r.active_key_version}), || {
                format!("active data-key version: {}", r.active_key_version)
            });
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum BundleFormat {
    /// PEM CERTIFICATE blocks.
    Pem,
    /// The SPIFFE bundle format (JWKS).
    Spiffe,
    /// Each key with its rotation state, one line each.
    Keys,
}

#[derive(Debug, Subcommand)]
pub(super) enum BundleCmd {
    /// Print the trust bundle.
    Show {
        /// Output format.
        #[arg(long, value_enum, default_value = "pem")]
        format: BundleFormat,
    },
}

pub(super) async fn bundle(cli: &Cli, cmd: &BundleCmd, out: &Out) -> Result<(), Failure> {
    let BundleCmd::Show { format } = cmd;
    let r = cli
        .clients()
        .await?
        .bundle
        .get(pb::GetBundleRequest {})
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    let text = match format {
        BundleFormat::Pem => r.pem.clone(),
        BundleFormat::Spiffe => r.spiffe_json.clone(),
        BundleFormat::Keys => keys_text(&r.keys),
    };
    out.print(
        &json!({"trust_domain": r.trust_domain, "sequence": r.sequence, "pem": r.pem, "spiffe": r.spiffe_json, "keys": keys_json(&r.keys)}),
        || text,
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(super) enum SvidCmd {
    /// Mint an X.509-SVID into files (svid.pem, key.pem, bundle.pem). The key
    /// is generated here and never leaves this machine.
    Mint {
        /// The SPIFFE ID to issue.
        #[arg(long)]
        spiffe_id: String,
        /// Lifetime (e.g. 1h); the server default when omitted.
        #[arg(long)]
        ttl: Option<Ttl>,
        /// Extra DNS SANs.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Directory to write the files into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch this workload's default X.509-SVID from the Workload API
    /// ($SPIFFE_ENDPOINT_SOCKET).
    Fetch(super::workload::SvidFetchArgs),
}

fn ttl_secs(t: Option<Ttl>) -> i64 {
    t.map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Opens (creating it 0700 when missing) the directory SVID files go to,
/// refusing one other users could tamper with: checked before anything is
/// issued, so a refused directory costs no credential.
pub(super) fn svid_dir(dir: &Path) -> Result<OutDir, Failure> {
    Ok(OutDir::create(dir, Access::Private)?)
}

/// Writes svid.pem, key.pem and bundle.pem through [`crate::files`]: the key
/// is 0600, the certificates 0644, and nothing already at those names is
/// reused, so another local user cannot prepare a file or a link there to
/// receive the key.
pub(super) fn write_svid_files(
    out: &OutDir,
    chain: &[Vec<u8>],
    key: &Secret,
    bundle: &[Vec<u8>],
) -> Result<(), Failure> {
    out.write(
        "svid.pem",
        crate::tls::certs_to_pem(chain).as_bytes(),
        Access::Public,
    )?;
    out.write(
        "key.pem",
        crate::tls::key_to_pem(key).expose(),
        Access::Private,
    )?;
    out.write(
        "bundle.pem",
        crate::tls::certs_to_pem(bundle).as_bytes(),
        Access::Public,
    )?;
    Ok(())
}

pub(super) async fn svid(cli: &Cli, cmd: &SvidCmd, out: &Out) -> Result<(), Failure> {
    let SvidCmd::Mint {
        spiffe_id,
        ttl,
        dns,
        out: dir,
    } = cmd
    else {
        // Fetch goes to the Workload API client (see `dispatch`).
        return Err(Failure("not an admin command".into()));
    };
    let id = SpiffeId::parse(spiffe_id).map_err(|e| Failure(format!("--spiffe-id: {e}")))?;
    let files = svid_dir(dir)?;
    let (key, csr) = crate::authority::generate_key_and_csr(&id)?;
    let r = cli
        .clients()
        .await?
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            entry_id: String::new(),
            csr,
            spiffe_id: id.to_string(),
            ttl_seconds: ttl_secs(*ttl),
            dns_names: dns.clone(),
        })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    write_svid_files(&files, &r.chain, &key, &r.bundle)?;
    out.print(
        &json!({"spiffe_id": id.to_string(), "expires_at": r.expires_at, "dir": dir.display().to_string()}),
        || format!("wrote svid.pem, key.pem, bundle.pem for {id} to {}", dir.display()),
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(super) enum JwtCmd {
    /// Mint a JWT-SVID (admin).
    Mint {
        /// The SPIFFE ID to issue.
        #[arg(long)]
        spiffe_id: String,
        /// Audiences (at least one).
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        /// Lifetime (e.g. 5m); the server default when omitted.
        #[arg(long)]
        ttl: Option<Ttl>,
    },
    /// Fetch JWT-SVIDs from the Workload API ($SPIFFE_ENDPOINT_SOCKET).
    Fetch(super::workload::JwtFetchArgs),
    /// Validate a JWT-SVID through the Workload API ($SPIFFE_ENDPOINT_SOCKET).
    Validate(super::workload::JwtValidateArgs),
}

pub(super) async fn jwt(cli: &Cli, cmd: &JwtCmd, out: &Out) -> Result<(), Failure> {
    let JwtCmd::Mint {
        spiffe_id,
        audience,
        ttl,
    } = cmd
    else {
        // Fetch goes to the Workload API client (see `dispatch`).
        return Err(Failure("not an admin command".into()));
    };
    // The server checks the same limits; checking here too names the limit even for an
    // audience too large for a gRPC message, which the transport would refuse first.
    crate::authority::check_audiences(audience).map_err(|e| Failure(format!("--audience: {e}")))?;
    let r = cli
        .clients()
        .await?
        .node
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            entry_id: String::new(),
            spiffe_id: spiffe_id.clone(),
            audience: audience.clone(),
            ttl_seconds: ttl_secs(*ttl),
        })
        .await
        .map_err(|s| Failure(status_line(&s)))?
        .into_inner();
    out.print(
        &json!({"token": r.token, "expires_at": r.expires_at}),
        || r.token.clone(),
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(super) enum PolicyCmd {
    /// Evaluate a policy input document (JSON) on the server.
    Check {
        /// The input document.
        #[arg(long)]
        input: PathBuf,
    },
    /// Reload the server's policy directory (the old policies stay if the new fail).
    Reload,
    /// Compile a policy directory and run the built-in cases, offline.
    Test {
        /// The directory of *.rego files.
        #[arg(long, default_value = "config/policies")]
        dir: PathBuf,
    },
}

pub(super) async fn policy(cli: &Cli, cmd: &PolicyCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        PolicyCmd::Check { input } => {
            let text = std::fs::read_to_string(input)
                .map_err(|e| Failure(format!("cannot read {}: {e}", input.display())))?;
            let r = cli
                .clients()
                .await?
                .policy
                .check(pb::CheckRequest { input_json: text })
                .await
                .map_err(|s| Failure(status_line(&s)))?
                .into_inner();
            out.print(&json!({"allow": r.allow, "reasons": r.reasons}), || {
                let verdict = if r.allow { "allow" } else { "deny" };
                let mut s = verdict.to_owned();
                for reason in &r.reasons {
                    s.push_str(&format!("\n  - {reason}"));
                }
                s
            });
        }
        PolicyCmd::Reload => {
            let r = cli
                .clients()
                .await?
                .policy
                .reload(pb::ReloadRequest {})
                .await
                .map_err(|s| Failure(status_line(&s)))?
                .into_inner();
            out.print(&json!({"files": r.files}), || {
                format!("reloaded: {}", r.files.join(", "))
            });
        }
        PolicyCmd::Test { dir } => super::offline::policy_test(dir, out)?,
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(super) enum AuditCmd {
    /// Verify the keyed chain (via the server, or offline with --data-dir);
    /// records written while sealed are listed as unauthenticated.
    Verify {
        /// Verify a stopped server's data directory offline.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Passphrase file for offline verification: authenticates keyed
        /// records, checks the stored head and the store's integrity.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the last records.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: u32,
    },
}

pub(super) async fn audit(cli: &Cli, cmd: &AuditCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        AuditCmd::Verify {
            data_dir: Some(dir),
            passphrase_file,
        } => super::offline::audit_verify(dir, passphrase_file.as_deref(), out),
        AuditCmd::Verify { data_dir: None, .. } => {
            let r = cli
                .clients()
                .await?
                .audit
                .verify(pb::VerifyAuditRequest {})
                .await
                .map_err(|s| Failure(status_line(&s)))?
                .into_inner();
            let result = if r.ok {
                Ok(Summary::from_response(&r))
            } else {
                Err((r.bad_record, r.error.clone()))
            };
            super::audit_report::report(result, out)
        }
        AuditCmd::Tail { count } => {
            let r = cli
                .clients()
                .await?
                .audit
                .tail(pb::TailAuditRequest { count: *count })
                .await
                .map_err(|s| Failure(status_line(&s)))?
                .into_inner();
            if out.json {
                for rec in &r.records {
                    println!("{rec}");
                }
            } else {
                out.print(&json!(null), || r.records.join("\n"));
            }
            Ok(())
        }
    }
}

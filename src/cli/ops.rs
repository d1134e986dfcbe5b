//! Operator, bundle, SVID, JWT, policy and audit commands.

use super::audit_report::Summary;
use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
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
            let v = json!({
                "initialized": r.initialized,
                "sealed": r.sealed,
                "trust_domain": r.trust_domain,
                "key_versions": r.key_versions,
                "active_key_version": r.active_key_version,
            });
            out.print(&v, || {
                format!(
                    "initialized: {}\nsealed: {}\ntrust domain: {}\nkey versions: {:?} (active {})",
                    r.initialized, r.sealed, r.trust_domain, r.key_versions, r.active_key_version
                )
            });
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
    };
    out.print(
        &json!({"trust_domain": r.trust_domain, "sequence": r.sequence, "pem": r.pem, "spiffe": r.spiffe_json}),
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

pub(super) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    // `mode` applies only when the file is created: set it on an existing
    // file too, so a private key never lands in a file others can read.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))
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
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
    write_file(
        &dir.join("svid.pem"),
        crate::tls::certs_to_pem(&r.chain).as_bytes(),
        0o644,
    )?;
    // The private key file is readable by its owner only.
    write_file(
        &dir.join("key.pem"),
        crate::tls::key_to_pem(&key).expose(),
        0o600,
    )?;
    write_file(
        &dir.join("bundle.pem"),
        crate::tls::certs_to_pem(&r.bundle).as_bytes(),
        0o644,
    )?;
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

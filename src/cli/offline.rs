//! Commands that work on files without a running server: `policy test` and
//! `audit verify --data-dir`.

use super::Failure;
use super::audit_report::Summary;
use super::output::Out;
use crate::audit::{ChainHead, ChainKey};
use crate::policy::Pdp;
use crate::server::{UnsealRefused, opened_head};
use crate::store::audit_log::{AuditError, verify_file};
use crate::store::{SealedStore, SledStore, Store};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// Compiles the policies in `dir` and runs the built-in cases.
pub(super) fn policy_test(dir: &Path, out: &Out) -> Result<(), Failure> {
    let files = crate::server::read_policy_dir(dir)?;
    Pdp::compile(&files)?;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    out.print(&json!({"ok": true, "files": names}), || {
        format!(
            "OK: {} compiled and passed the built-in cases",
            names.join(", ")
        )
    });
    Ok(())
}

/// Verifies a stopped server's audit log. With the passphrase (file or
/// $SIGIL_UNSEAL_PASSPHRASE) it does what unseal does, writing nothing:
/// checks every store table against its digest, authenticates the keyed
/// records, checks the chain against the head kept in the sealed store
/// (records dropped from the end) and the store against the log's
/// generation (a rollback). Without it only the links are checked.
pub(super) fn audit_verify(
    dir: &Path,
    passphrase_file: Option<&Path>,
    out: &Out,
) -> Result<(), Failure> {
    // `sigil dev` keeps the server's files one level down.
    let dir = if !dir.join("audit.log").exists() && dir.join("server/audit.log").exists() {
        dir.join("server")
    } else {
        dir.to_owned()
    };
    let log = dir.join("audit.log");
    if !log.exists() {
        return Err(Failure(format!("no audit log at {}", log.display())));
    }
    let have_passphrase =
        passphrase_file.is_some() || std::env::var_os("SIGIL_UNSEAL_PASSPHRASE").is_some();
    if !have_passphrase {
        eprintln!(
            "warning: no passphrase given; keyed records cannot be authenticated and records dropped from the end cannot be detected"
        );
        return report(&log, None, None, None, out);
    }
    let passphrase = super::ops::read_passphrase(passphrase_file)?;
    let raw: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("store"))?);
    let store = SealedStore::new(raw, crate::keyring::KdfCost::default());
    // Opened, never published: nothing is written.
    let opened = store.open_keys(&passphrase)?;
    let head = opened_head(&opened)?;
    let key = opened.chain_key()?;
    report(
        &log,
        Some(&key),
        head.as_ref(),
        Some(opened.generation()),
        out,
    )
}

fn report(
    log: &Path,
    key: Option<&ChainKey>,
    head: Option<&ChainHead>,
    store_generation: Option<u64>,
    out: &Out,
) -> Result<(), Failure> {
    let result = match verify_file(log, key, head) {
        Ok(report) => {
            if let Some(store) = store_generation
                && report.generation > store
            {
                let refused = UnsealRefused::Rollback {
                    store,
                    log: report.generation,
                };
                return Err(Failure(refused.to_string()));
            }
            Ok(Summary::from_report(&report, store_generation))
        }
        Err(AuditError::Tampered(e)) => Err((e.record().unwrap_or(0), e.to_string())),
        Err(e) => return Err(Failure(format!("cannot verify {}: {e}", log.display()))),
    };
    super::audit_report::report(result, out)
}

//! Commands that work on files without a running server: `policy test` and
//! `audit verify --data-dir`.

use super::Failure;
use super::output::Out;
use crate::policy::Pdp;
use crate::store::audit_log::AuditError;
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
/// $SIGIL_UNSEAL_PASSPHRASE) the chain is also checked against the head kept
/// in the sealed store, which detects records dropped from the end.
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
    let head = if have_passphrase {
        let passphrase = super::ops::read_passphrase(passphrase_file)?;
        let raw: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("store"))?);
        let store = Arc::new(SealedStore::new(raw, crate::keyring::KdfCost::default()));
        store.unseal(&passphrase)?;
        let heads = crate::server::SealedHeadsReader::new(store);
        heads.stored()?
    } else {
        eprintln!("warning: no passphrase given; records dropped from the end cannot be detected");
        None
    };
    match crate::store::audit_log::verify_file(&log, head.as_ref()) {
        Ok(report) => super::ops::report_verify(true, report.records, 0, "", out),
        Err(AuditError::Tampered(e)) => {
            super::ops::report_verify(false, 0, e.record().unwrap_or(0), &e.to_string(), out)
        }
        Err(e) => Err(Failure(format!("cannot verify {}: {e}", log.display()))),
    }
}

//! The seal lifecycle: init, unseal (with the at-rest checks), seal, data-key
//! rotation, and reading the audit log through the server.
//!
//! Unseal opens the keys without putting them to use, then refuses to go on
//! if the store or the audit log was tampered with while the server was
//! stopped:
//!
//! 1. every store table must match its digest (`store::sealed`), or the
//!    error names the table;
//! 2. the audit log must verify under the chain key against the head kept
//!    in the store (forged, altered or erased records are named);
//! 3. the highest store generation a keyed audit record carries must not be
//!    ahead of the store's own: if it is, the store is an older copy (a
//!    banned agent unbanned, a used join token fresh again). An operator
//!    restoring a backup on purpose passes `accept_rollback`: the store's
//!    generation then moves past the log's and the re-anchor record says so.
//!
//! Argon2id, the table scan and the full log verification all block, so
//! they run on the blocking pool, never on the async workers. Only then are
//! the keys published, the caches loaded, and the keyed re-anchor record
//! written (stating how many records were written while sealed) before the
//! server answers anything but status, init and unseal. Then the authority's
//! rotation plan catches up with the time the server was down (`keys.rs`),
//! so a server killed in any phase of a rotation resumes the same plan.

use super::keys::AUTHORITY_KEY;
use super::{LifecycleError, Server};
use crate::audit::{
    ANCHOR_ACTION, Auth, CHECKPOINT_ACTION, ChainKey, Event, IssuedToken, Verdict, VerifyError,
    VerifyReport,
};
use crate::authority::Authority;
use crate::clock;
use crate::policy::Action;
use crate::secret::Secret;
use crate::server::blocking;
use crate::server::heads::{decode_state, opened_head};
use crate::store::audit_log::AuditError;
use crate::store::{SealError, Table, Unsealing};
use std::sync::Arc;

/// Why unseal (or init) refused a store or log that the passphrase did open.
#[derive(Debug, thiserror::Error)]
pub enum UnsealRefused {
    /// The audit log fails verification under the store's chain key.
    #[error("{0}; the server stays sealed")]
    Audit(AuditError),
    /// Init found keyed records in the log: they were written under another
    /// store's keys and can never verify under the new ones.
    #[error(
        "the audit log holds {records} keyed records from another store; move it aside before init"
    )]
    ForeignLog {
        /// Keyed records found.
        records: u64,
    },
    /// The store is older than the audit log: it was restored from a copy,
    /// or its latest writes were lost.
    #[error(
        "store rollback: the audit log has seen store generation {log} but the store is at generation {store}: an older copy of the store was restored, or the store lost its latest writes (a damaged or truncated store file); the server stays sealed. If the store was restored from a backup on purpose, unseal with --accept-rollback"
    )]
    Rollback {
        /// The store's generation.
        store: u64,
        /// The highest generation in the audit log.
        log: u64,
    },
}

/// An accepted rollback: what the store and log said, and where the store is now.
#[derive(Debug, Clone, Copy)]
struct Rollback {
    store: u64,
    log: u64,
    now: u64,
}

/// What the blocking part of unseal hands to the rest.
struct Checked {
    key: ChainKey,
    rollback: Option<Rollback>,
    /// The stored authority; none on a fresh store.
    authority: Option<Authority>,
}

impl Server {
    /// Creates the key hierarchy and the CA; the server is unsealed after.
    pub async fn init(self: Arc<Self>, passphrase: Secret) -> Result<(), LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let this = self.clone();
        // A refused init creates nothing and leaves the server as it was.
        blocking::run(move || this.check_before_init()).await?;
        let this = self.clone();
        let checked = blocking::run(move || {
            this.store
                .init(&passphrase, &this.config.trust_domain, this.now())?;
            let key = this.store.chain_key()?;
            // A new store: its log holds no keyed record, so no token.
            this.prepare(key, None, Vec::new())
        })
        .await;
        self.finish_unseal(checked).await?;
        tracing::info!(trust_domain = %self.config.trust_domain, "initialized and unsealed");
        Ok(())
    }

    /// Refuses init on an initialized store, and on a log with keyed
    /// records: those were written under another store's keys and could
    /// never verify under the new ones. Blocks.
    fn check_before_init(&self) -> Result<(), LifecycleError> {
        if self.store.status()?.initialized {
            return Err(SealError::AlreadyInitialized.into());
        }
        let found = self
            .audit
            .verify(None, None)
            .map_err(UnsealRefused::Audit)?;
        let keyed = found.authenticated + found.keyed_unchecked;
        if keyed > 0 {
            return Err(UnsealRefused::ForeignLog { records: keyed }.into());
        }
        Ok(())
    }

    /// Unseals with `passphrase`; a wrong one changes nothing. Refuses a
    /// tampered or rolled-back store (see the module docs).
    pub async fn unseal(self: Arc<Self>, passphrase: Secret) -> Result<(), LifecycleError> {
        self.unseal_with(passphrase, false).await
    }

    /// As [`Server::unseal`]; with `accept_rollback`, a store older than the
    /// audit log is accepted (a deliberate restore from backup) and the
    /// re-anchor record says so.
    pub async fn unseal_with(
        self: Arc<Self>,
        passphrase: Secret,
        accept_rollback: bool,
    ) -> Result<(), LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if !self.is_sealed() {
            return Ok(());
        }
        let this = self.clone();
        let checked = blocking::run(move || this.open_checked(&passphrase, accept_rollback)).await;
        self.finish_unseal(checked).await?;
        tracing::info!("unsealed");
        Ok(())
    }

    /// Opens the keys, runs the checks and, if they pass, publishes the keys
    /// and loads what the server needs. Blocks.
    fn open_checked(
        &self,
        passphrase: &Secret,
        accept_rollback: bool,
    ) -> Result<Checked, LifecycleError> {
        let mut opened = self.store.open_keys(passphrase)?;
        let head = opened_head(&opened)?;
        let key = opened.chain_key()?;
        // The tokens issued and not yet expired, from the records of their
        // issue: only keyed records, authenticated under the chain key, of
        // allowed mints and logins (see `server::tokens`), with the store
        // generation each was written at. They are used only if the whole
        // log verifies.
        let now = crate::clock::unix_seconds(self.now());
        let mut issued = Vec::new();
        let report = self
            .audit
            .verify_visiting(Some(&key), head.as_ref(), &mut |parsed| {
                let record = &parsed.record;
                if record.auth == Auth::Hmac
                    && record.event.decision == Verdict::Allow
                    && [Action::TokenMint, Action::AuthLogin]
                        .iter()
                        .any(|a| a.as_str() == record.event.action)
                    && let Some(t) = &record.event.token
                    && t.expires_at > now
                {
                    issued.push((record.generation, t.clone()));
                }
            })
            .map_err(UnsealRefused::Audit)?;
        let mut untrusted: Vec<(u64, u64)> =
            decode_state(opened.get(Table::STATE, UNTRUSTED_KEY)?, UNTRUSTED_KEY)?
                .unwrap_or_default();
        let rollback = check_generation(&mut opened, &report, accept_rollback, &mut untrusted)?;
        // An older copy of the store, accepted by the operator, lacks the
        // revocations made after it was taken. A token whose issue record
        // is from the copy's generation or later (up to the highest the log
        // had seen) may have been revoked since, so it stays unknown, and
        // refused, rather than coming back unrevoked; one issued before is
        // kept, as the copy kept it before issue records carried tokens.
        // The ranges are stored with the accepted rollback, so every later
        // unseal leaves the same tokens out.
        let issued = issued
            .into_iter()
            .filter(|(generation, _)| {
                !untrusted
                    .iter()
                    .any(|(from, to)| (*from..=*to).contains(generation))
            })
            .map(|(_, t)| t)
            .collect();
        opened.publish();
        self.prepare(key, rollback, issued)
    }

    /// With the keys published: the stored authority and the entry and agent
    /// caches. Blocks.
    fn prepare(
        &self,
        key: ChainKey,
        rollback: Option<Rollback>,
        issued: Vec<std::sync::Arc<IssuedToken>>,
    ) -> Result<Checked, LifecycleError> {
        let authority = self.load_authority()?;
        let count = self.entries.load()?;
        self.agents.load()?;
        let foreign = self.federation.load()?;
        let rotating = self.secrets.load()?;
        let tokens = self
            .tokens
            .load(crate::clock::unix_seconds(self.now()), issued)
            .map_err(|e| LifecycleError::Tokens(e.to_string()))?;
        tracing::info!(tokens, "issued tokens loaded");
        let requests = self
            .elevations
            .load()
            .map_err(|e| LifecycleError::Elevations(e.to_string()))?;
        tracing::info!(requests, "JIT requests loaded");
        let quarantined = self
            .quarantines
            .load()
            .map_err(|e| LifecycleError::Quarantines(e.to_string()))?;
        tracing::info!(quarantined, "quarantines loaded");
        tracing::info!(rotating, "secret rotation schedules loaded");
        tracing::info!(entries = count, foreign_bundles = foreign, "caches loaded");
        Ok(Checked {
            key,
            rollback,
            authority,
        })
    }

    /// Writes the re-anchor and activates; on any failure (including of the
    /// blocking part) the keys leave memory again, so the server never
    /// holds keys while it reports itself sealed.
    async fn finish_unseal(
        &self,
        checked: Result<Checked, LifecycleError>,
    ) -> Result<(), LifecycleError> {
        let outcome = match checked {
            Ok(checked) => self.anchor_and_activate(checked).await,
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            self.seal_now().await;
        }
        outcome
    }

    async fn anchor_and_activate(&self, checked: Checked) -> Result<(), LifecycleError> {
        let now = self.now();
        let mut reasons = vec!["unsealed".to_owned()];
        if let Some(r) = checked.rollback {
            reasons.push(format!(
                "rollback accepted: the store was at generation {} behind the audit log's {}; moved to {}",
                r.store, r.log, r.now
            ));
        }
        let anchor = Event::by_server(clock::unix_seconds(now), ANCHOR_ACTION, reasons);
        self.audit.unsealed(checked.key, anchor).await?;
        // After the anchor, so that what the plan does now is in the keyed chain,
        // and before anything signs.
        let authority = self.settle_authority(checked.authority, now).await?;
        self.activate(authority, now)
    }

    /// The stored authority, if the store holds one (a fresh store, or one whose
    /// init stopped before the authority was stored, holds none).
    fn load_authority(&self) -> Result<Option<Authority>, LifecycleError> {
        match self.store.get(Table::AUTHORITY, AUTHORITY_KEY)? {
            Some(stored) => Ok(Some(Authority::from_sealed_bytes(stored.expose())?)),
            None => Ok(None),
        }
    }

    /// Drops every key from memory, after any init or unseal in progress.
    pub async fn seal(&self) {
        let _guard = self.lifecycle.lock().await;
        self.seal_now().await;
    }

    async fn seal_now(&self) {
        // Refuse requests first, so that no new "allow" needs the chain key
        // that is about to go; then a keyed checkpoint carries the store's
        // generation (a later rollback is caught) and the head is logged.
        *crate::sync::write(&self.active) = None;
        let checkpoint = Event::by_server(
            clock::unix_seconds(self.now()),
            CHECKPOINT_ACTION,
            vec!["seal".to_owned()],
        );
        if let Err(e) = self.audit.sealing(checkpoint).await {
            tracing::error!(error = %e, "audit checkpoint at seal failed");
        }
        // Deletions of expired token rows still queued reach the store
        // while its keys are there (a shutdown seals too); revocations
        // were durable before they returned.
        if let Err(e) = self.tokens.flush().await {
            tracing::error!(error = %e, "token rows queued at seal were not written");
        }
        self.store.seal();
        self.entries.clear();
        self.agents.clear();
        self.federation.clear();
        self.secrets.clear();
        self.tls.send_replace(None);
        self.http_tls.send_replace(None);
        // Issued tokens are loaded again at unseal; sealed, none is held.
        self.tokens.clear();
        self.elevations.clear();
        self.quarantines.clear();
        self.report_health();
        tracing::info!("sealed");
    }

    /// Adds a data-key version.
    pub async fn rotate_keys(self: Arc<Self>) -> Result<u32, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let this = self.clone();
        blocking::run(move || Ok(this.store.rotate_data_key()?)).await
    }

    /// The store's write generation as last made durable.
    pub fn store_generation(&self) -> u64 {
        self.store.generation()
    }

    fn verify_audit_now(&self) -> Result<Result<VerifyReport, VerifyError>, LifecycleError> {
        let head = self.heads.stored()?;
        let key = self.store.chain_key()?;
        match self.audit.verify(Some(&key), head.as_ref()) {
            Ok(report) => Ok(Ok(report)),
            Err(AuditError::Tampered(e)) => Ok(Err(e)),
            Err(e) => Err(LifecycleError::AuditUnreadable(e)),
        }
    }

    /// Verifies the audit chain under the chain key against the stored
    /// head (reads the whole log, so off the async workers).
    pub async fn verify_audit(
        self: Arc<Self>,
    ) -> Result<Result<VerifyReport, VerifyError>, LifecycleError> {
        blocking::run(move || self.verify_audit_now()).await
    }

    /// The last `n` audit records.
    pub async fn audit_tail(self: Arc<Self>, n: usize) -> Result<Vec<String>, LifecycleError> {
        blocking::run(move || self.audit.tail(n).map_err(LifecycleError::from)).await
    }
}

/// Refuses a store older than the log, unless the operator accepts it; an
/// accepted rollback moves the store's generation past the log's.
/// Key in [`Table::STATE`] of the store generations (inclusive ranges)
/// whose token issue records are not trusted: those an accepted rollback
/// left behind (see `open_checked`).
const UNTRUSTED_KEY: &[u8] = b"untrusted-token-generations";

fn check_generation(
    opened: &mut Unsealing<'_>,
    report: &VerifyReport,
    accept: bool,
    untrusted: &mut Vec<(u64, u64)>,
) -> Result<Option<Rollback>, LifecycleError> {
    let (store, log) = (opened.generation(), report.generation);
    if log <= store {
        return Ok(None);
    }
    if !accept {
        return Err(UnsealRefused::Rollback { store, log }.into());
    }
    untrusted.push((store, log));
    let json = serde_json::to_vec(untrusted).map_err(|e| LifecycleError::Tokens(e.to_string()))?;
    opened.advance_generation(
        log.saturating_add(1),
        &[(Table::STATE, UNTRUSTED_KEY, &json)],
    )?;
    tracing::warn!(
        store,
        log,
        now = opened.generation(),
        "store rollback accepted by the operator"
    );
    Ok(Some(Rollback {
        store,
        log,
        now: opened.generation(),
    }))
}

//! What `sigil audit verify` prints, online or offline: the chain's state,
//! and records written while sealed listed as unauthenticated, never
//! counted as verified.

use super::Failure;
use super::output::Out;
use crate::api::pb;
use crate::audit::VerifyReport;
use serde_json::json;

/// Runs listed in text output before the rest are summarized.
const RUNS_SHOWN: usize = 10;

/// An intact chain, as the server or an offline check found it.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub records: u64,
    pub authenticated: u64,
    /// Keyed records whose HMAC was not checked (offline, no passphrase).
    pub not_checked: u64,
    /// Records written while sealed: (first, last, re-anchored by; 0 = not yet).
    pub runs: Vec<(u64, u64, u64)>,
    pub head_seq: u64,
    pub head_hash: String,
    pub log_generation: u64,
    pub store_generation: Option<u64>,
}

impl Summary {
    /// From a local verification.
    pub fn from_report(r: &VerifyReport, store_generation: Option<u64>) -> Summary {
        Summary {
            records: r.records,
            authenticated: r.authenticated,
            not_checked: r.keyed_unchecked,
            runs: r
                .sealed_runs
                .iter()
                .map(|s| (s.first, s.last, s.anchored_by.unwrap_or(0)))
                .collect(),
            head_seq: r.head.seq,
            head_hash: hex::encode(r.head.hash),
            log_generation: r.generation,
            store_generation,
        }
    }

    /// From the server's answer.
    pub fn from_response(r: &pb::VerifyAuditResponse) -> Summary {
        Summary {
            records: r.records,
            authenticated: r.authenticated,
            not_checked: 0,
            runs: r
                .sealed_runs
                .iter()
                .map(|s| (s.first, s.last, s.anchored_by))
                .collect(),
            head_seq: r.head_seq,
            head_hash: r.head_hash.clone(),
            log_generation: r.log_generation,
            store_generation: Some(r.store_generation),
        }
    }

    fn unauthenticated(&self) -> u64 {
        self.runs
            .iter()
            .map(|(first, last, _)| last.saturating_sub(*first).saturating_add(1))
            .sum()
    }

    fn text(&self) -> String {
        let unauthenticated = self.unauthenticated();
        let mut lines = Vec::new();
        if unauthenticated == 0 && self.not_checked == 0 {
            lines.push(format!(
                "OK: {} records, all authenticated (keyed chain)",
                self.records
            ));
        } else {
            lines.push(format!(
                "chain intact: {} records, {} authenticated",
                self.records, self.authenticated
            ));
        }
        if self.not_checked > 0 {
            lines.push(format!(
                "NOT CHECKED: {} keyed records (without the passphrase their HMACs cannot be verified)",
                self.not_checked
            ));
        }
        if unauthenticated > 0 {
            lines.push(format!(
                "UNAUTHENTICATED: {unauthenticated} records written while sealed: {}",
                self.runs_text()
            ));
        }
        lines.push(format!("head: record {} {}", self.head_seq, self.head_hash));
        lines.join("\n")
    }

    fn runs_text(&self) -> String {
        let mut parts: Vec<String> = self
            .runs
            .iter()
            .take(RUNS_SHOWN)
            .map(|&(first, last, by)| {
                let span = if first == last {
                    format!("{first}")
                } else {
                    format!("{first}-{last}")
                };
                if by == 0 {
                    format!("{span} (not yet re-anchored)")
                } else {
                    format!("{span} (re-anchored by {by})")
                }
            })
            .collect();
        if self.runs.len() > RUNS_SHOWN {
            parts.push(format!("and {} more runs", self.runs.len() - RUNS_SHOWN));
        }
        parts.join(", ")
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "ok": true,
            "records": self.records,
            "authenticated": self.authenticated,
            "unauthenticated": self.unauthenticated(),
            "not_checked": self.not_checked,
            "sealed_runs": self.runs.iter().map(|(first, last, by)| json!({
                "first": first, "last": last, "anchored_by": by,
            })).collect::<Vec<_>>(),
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "log_generation": self.log_generation,
            "store_generation": self.store_generation,
        })
    }
}

/// Prints a verification result; a broken chain is an error naming the record.
pub(super) fn report(result: Result<Summary, (u64, String)>, out: &Out) -> Result<(), Failure> {
    match result {
        Ok(summary) => {
            out.print(&summary.json(), || summary.text());
            Ok(())
        }
        Err((bad, error)) => {
            if out.json {
                println!(
                    "{}",
                    json!({"ok": false, "bad_record": bad, "error": error})
                );
            }
            Err(Failure(format!(
                "audit log verification failed at record {bad}: {error}"
            )))
        }
    }
}

//! `sigil secret`: versioned secrets and their rotation (SPEC §3.3).
//!
//! Values given as `KEY=VALUE` are visible to other local users in the
//! process list while the command runs; `KEY=@FILE` reads the value from a
//! file instead, and is what scripts should use.

use super::agents::time_text;
use super::output::Out;
use super::{Cli, Failure, status_line};
use crate::api::pb;
use crate::id::Ttl;
use crate::secret::Secret;
use clap::Subcommand;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub(super) enum SecretCmd {
    /// Write the next version: KEY=VALUE or KEY=@FILE, one or more.
    Put {
        /// The secret's path, e.g. ci/app/db.
        path: String,
        /// Fields, KEY=VALUE or KEY=@FILE.
        #[arg(required = true, value_name = "KEY=VALUE|KEY=@FILE")]
        fields: Vec<String>,
        /// Check-and-set: 0 creates only; N requires the current version to be N.
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Read a version (the current one by default).
    Get {
        /// The secret's path.
        path: String,
        /// The version to read.
        #[arg(long)]
        version: Option<u64>,
        /// Print only this field's value.
        #[arg(long)]
        field: Option<String>,
    },
    /// List the paths at or below PREFIX that you may read.
    List {
        /// A path prefix (segment-wise); everything when absent.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Show a secret's metadata; with options, change them first.
    Meta {
        /// The secret's path.
        path: String,
        /// Keep this many versions (older ones are destroyed).
        #[arg(long)]
        max_versions: Option<u32>,
        /// Replace the custom metadata with these KEY=VALUE pairs.
        #[arg(long = "custom", value_name = "KEY=VALUE")]
        custom: Vec<String>,
        /// Remove all custom metadata.
        #[arg(long, conflicts_with = "custom")]
        clear_custom: bool,
    },
    /// Soft-delete versions (undelete restores them).
    Delete(VersionsArgs),
    /// Restore soft-deleted versions.
    Undelete(VersionsArgs),
    /// Destroy versions for good: their values are removed from the store.
    Destroy(VersionsArgs),
    /// Rotate now with the secret's rotation settings.
    Rotate {
        /// The secret's path.
        path: String,
    },
    /// Print each new version as it is written; reconnects and resumes.
    Watch {
        /// The secret's path.
        path: String,
        /// Start after this version (default: with the current one).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Print only this field's value.
        #[arg(long)]
        field: Option<String>,
        /// Exit after this many versions.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Scheduled rotation settings.
    #[command(subcommand)]
    Rotation(RotationCmd),
}

#[derive(Debug, clap::Args)]
pub(super) struct VersionsArgs {
    /// The secret's path.
    path: String,
    /// Versions, comma-separated (default: the current one).
    #[arg(long, value_delimiter = ',')]
    versions: Vec<u64>,
}

#[derive(Debug, Subcommand)]
pub(super) enum RotationCmd {
    /// Rotate PATH on a schedule.
    Set {
        /// The secret's path.
        path: String,
        /// Period, e.g. 30d.
        #[arg(long)]
        every: Ttl,
        /// Spread each rotation over this window after it is due.
        #[arg(long)]
        window: Option<Ttl>,
        /// Keep the replaced version readable this long (default: half the period, at most 1h).
        #[arg(long)]
        grace: Option<Ttl>,
        /// NAME[:KEY=VALUE,...], e.g. random:length=32,charset=alnum.
        #[arg(long)]
        generator: String,
    },
    /// Show PATH's rotation: settings, next due time, failures.
    Show {
        /// The secret's path.
        path: String,
    },
    /// Stop rotating PATH.
    Disable {
        /// The secret's path.
        path: String,
    },
}

fn st(s: tonic::Status) -> Failure {
    Failure(status_line(&s))
}

fn parse_fields(args: &[String]) -> Result<HashMap<String, Vec<u8>>, Failure> {
    let mut out = HashMap::new();
    for (i, arg) in args.iter().enumerate() {
        // The argument itself is never echoed: without its `=` it may be a value.
        let (k, v) = arg.split_once('=').ok_or_else(|| {
            Failure(format!(
                "field argument {} has no '=': fields are KEY=VALUE or KEY=@FILE",
                i + 1
            ))
        })?;
        let value = match v.strip_prefix('@') {
            Some(file) => std::fs::read(file)
                .map_err(|e| Failure(format!("field {k}: cannot read {file}: {e}")))?,
            None => v.as_bytes().to_vec(),
        };
        if out.insert(k.to_owned(), value).is_some() {
            return Err(Failure(format!("field {k:?} is given twice")));
        }
    }
    Ok(out)
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn version_json(v: &pb::SecretVersion) -> Value {
    let fields: serde_json::Map<String, Value> = v
        .fields
        .iter()
        .map(|(k, x)| (k.clone(), Value::String(text(x))))
        .collect();
    json!({"path": v.path, "version": v.version, "created_at": v.created_at,
           "previous": v.previous, "fields": fields})
}

fn print_version(out: &Out, v: &pb::SecretVersion, field: Option<&str>) -> Result<(), Failure> {
    if let Some(name) = field {
        let value = v.fields.get(name).ok_or_else(|| {
            Failure(format!(
                "{} version {} has no field {name:?}",
                v.path, v.version
            ))
        })?;
        // The value alone, for `$(sigil secret get … --field password)`.
        let value = Secret::from_slice(value);
        println!("{}", text(value.expose()));
        return Ok(());
    }
    out.print(&version_json(v), || {
        let mut names: Vec<&String> = v.fields.keys().collect();
        names.sort();
        let mut s = format!(
            "{} version {} (created {}{})\n",
            v.path,
            v.version,
            time_text(v.created_at),
            if v.previous { ", previous" } else { "" }
        );
        for k in names {
            s.push_str(&format!(
                "{k}={}\n",
                text(v.fields.get(k).map_or(&[][..], Vec::as_slice))
            ));
        }
        s
    });
    Ok(())
}

fn meta_json(m: &pb::SecretMetadata) -> Value {
    let versions: Vec<Value> = m
        .versions
        .iter()
        .map(|v| {
            let t = |x: i64| if x == 0 { Value::Null } else { json!(x) };
            json!({"version": v.version, "created_at": v.created_at, "deleted_at": t(v.deleted_at),
                   "destroyed_at": t(v.destroyed_at), "previous_until": t(v.previous_until)})
        })
        .collect();
    json!({"path": m.path, "current_version": m.current_version, "oldest_version": m.oldest_version,
           "max_versions": m.max_versions, "created_at": m.created_at, "updated_at": m.updated_at,
           "custom": m.custom, "versions": versions, "rotates": m.rotates})
}

fn meta_text(m: &pb::SecretMetadata) -> String {
    let mut s = format!(
        "{}: current version {}, keeping {} (created {}, updated {}){}\n",
        m.path,
        m.current_version,
        m.max_versions,
        time_text(m.created_at),
        time_text(m.updated_at),
        if m.rotates { ", rotates" } else { "" }
    );
    let mut custom: Vec<_> = m.custom.iter().collect();
    custom.sort();
    for (k, v) in custom {
        s.push_str(&format!("  custom {k}={v}\n"));
    }
    for v in &m.versions {
        let state = match (v.destroyed_at, v.deleted_at) {
            (d, _) if d != 0 => format!("destroyed {}", time_text(d)),
            (_, d) if d != 0 => format!("deleted {}", time_text(d)),
            _ if v.previous_until != 0 => format!("previous until {}", time_text(v.previous_until)),
            _ => "live".into(),
        };
        s.push_str(&format!(
            "  version {}: created {}, {state}\n",
            v.version,
            time_text(v.created_at)
        ));
    }
    s
}

fn rotation_json(r: &pb::RotationStatus) -> Value {
    let t = |x: i64| if x == 0 { Value::Null } else { json!(x) };
    json!({"path": r.path, "enabled": r.enabled, "every_seconds": r.every_seconds,
           "window_seconds": r.window_seconds, "grace_seconds": r.grace_seconds,
           "generator": r.generator, "next_due": t(r.next_due), "failures": r.failures,
           "last_error": if r.last_error.is_empty() { Value::Null } else { json!(r.last_error) },
           "retry_at": t(r.retry_at), "last_rotated": t(r.last_rotated),
           "pending": r.pending, "retiring": r.retiring})
}

fn rotation_text(r: &pb::RotationStatus) -> String {
    if !r.enabled {
        return format!("{}: no rotation", r.path);
    }
    let mut s = format!(
        "{}: {} every {}s (window {}s, grace {}s)\n  next due {}\n",
        r.path,
        r.generator,
        r.every_seconds,
        r.window_seconds,
        r.grace_seconds,
        time_text(r.next_due)
    );
    if r.last_rotated != 0 {
        s.push_str(&format!("  last rotated {}\n", time_text(r.last_rotated)));
    }
    if r.failures > 0 {
        s.push_str(&format!(
            "  FAILING: {} consecutive failures, retry at {}: {}\n",
            r.failures,
            time_text(r.retry_at),
            r.last_error
        ));
    }
    if r.pending {
        s.push_str("  a begun rotation is waiting to be finished\n");
    }
    s
}

pub(super) async fn run(cli: &Cli, cmd: &SecretCmd, out: &Out) -> Result<(), Failure> {
    let mut c = cli.clients().await?.secrets;
    match cmd {
        SecretCmd::Put { path, fields, cas } => {
            let req = pb::PutSecretRequest {
                path: path.clone(),
                fields: parse_fields(fields)?,
                has_cas: cas.is_some(),
                cas: cas.unwrap_or(0),
            };
            let v = c.put(req).await.map_err(st)?.into_inner().version;
            out.print(&json!({"path": path, "version": v}), || {
                format!("wrote {path} version {v}")
            });
        }
        SecretCmd::Get {
            path,
            version,
            field,
        } => {
            let req = pb::GetSecretRequest {
                path: path.clone(),
                version: version.unwrap_or(0),
            };
            let v = c.get(req).await.map_err(st)?.into_inner();
            print_version(out, &v, field.as_deref())?;
        }
        SecretCmd::List { prefix } => {
            let req = pb::ListSecretsRequest {
                prefix: prefix.clone(),
            };
            let list = c.list(req).await.map_err(st)?.into_inner().secrets;
            let rows: Vec<Value> = list
                .iter()
                .map(|s| json!({"path": s.path, "current_version": s.current_version}))
                .collect();
            out.print(&json!({"secrets": rows}), || {
                list.iter()
                    .map(|s| format!("{}\t{}\n", s.path, s.current_version))
                    .collect()
            });
        }
        SecretCmd::Meta {
            path,
            max_versions,
            custom,
            clear_custom,
        } => {
            let pairs = custom
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| Failure(format!("--custom {kv:?} must be KEY=VALUE")))
                })
                .collect::<Result<HashMap<_, _>, _>>()?;
            let req = pb::SecretMetaRequest {
                path: path.clone(),
                set_max_versions: max_versions.is_some(),
                max_versions: max_versions.unwrap_or(0),
                set_custom: *clear_custom || !pairs.is_empty(),
                custom: pairs,
            };
            let m = c.meta(req).await.map_err(st)?.into_inner();
            out.print(&meta_json(&m), || meta_text(&m));
        }
        SecretCmd::Delete(a) | SecretCmd::Undelete(a) | SecretCmd::Destroy(a) => {
            let req = pb::SecretVersionsRequest {
                path: a.path.clone(),
                versions: a.versions.clone(),
            };
            let (verb, changed) = match cmd {
                SecretCmd::Delete(_) => ("deleted", c.delete(req).await),
                SecretCmd::Undelete(_) => ("undeleted", c.undelete(req).await),
                _ => ("destroyed", c.destroy(req).await),
            };
            let changed = changed.map_err(st)?.into_inner().changed;
            out.print(&json!({"path": a.path, verb: changed}), || {
                format!("{}: {verb} versions {changed:?}", a.path)
            });
        }
        SecretCmd::Rotate { path } => {
            let req = pb::SecretPathRequest { path: path.clone() };
            let v = c.rotate(req).await.map_err(st)?.into_inner().version;
            out.print(&json!({"path": path, "version": v}), || {
                format!("rotated {path} to version {v}")
            });
        }
        SecretCmd::Watch {
            path,
            after,
            field,
            count,
        } => {
            watch(cli, &mut c, path, *after, field.as_deref(), *count, out).await?;
        }
        SecretCmd::Rotation(r) => rotation(&mut c, r, out).await?,
    }
    Ok(())
}

async fn rotation(
    c: &mut pb::secrets_client::SecretsClient<super::client::Conn>,
    cmd: &RotationCmd,
    out: &Out,
) -> Result<(), Failure> {
    let status = match cmd {
        RotationCmd::Set {
            path,
            every,
            window,
            grace,
            generator,
        } => {
            let secs =
                |t: Option<Ttl>| t.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
            let req = pb::SetRotationRequest {
                path: path.clone(),
                every_seconds: secs(Some(*every)),
                window_seconds: secs(*window),
                grace_seconds: secs(*grace),
                generator: generator.clone(),
            };
            c.set_rotation(req).await
        }
        RotationCmd::Show { path } => {
            c.show_rotation(pb::SecretPathRequest { path: path.clone() })
                .await
        }
        RotationCmd::Disable { path } => {
            c.disable_rotation(pb::SecretPathRequest { path: path.clone() })
                .await
        }
    }
    .map_err(st)?
    .into_inner();
    out.print(&rotation_json(&status), || rotation_text(&status));
    Ok(())
}

fn retryable(s: &tonic::Status) -> bool {
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => true,
        Code::FailedPrecondition => s.message().starts_with("sealed"),
        _ => false,
    }
}

/// How long a watcher waits before reconnecting after losing the server.
const RECONNECT: Duration = Duration::from_secs(1);

async fn watch(
    cli: &Cli,
    c: &mut pb::secrets_client::SecretsClient<super::client::Conn>,
    path: &str,
    mut after: u64,
    field: Option<&str>,
    count: Option<u64>,
    out: &Out,
) -> Result<(), Failure> {
    let mut seen = 0u64;
    loop {
        let req = pb::WatchSecretRequest {
            path: path.to_owned(),
            after_version: after,
        };
        let lost = match c.watch(req).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(v)) => {
                            after = v.version;
                            print_version(out, &v, field)?;
                            seen += 1;
                            if count.is_some_and(|n| seen >= n) {
                                return Ok(());
                            }
                        }
                        Ok(None) => break None,
                        Err(s) => break Some(s),
                    }
                }
            }
            Err(s) => Some(s),
        };
        // A lost connection, or a server restarting (still sealed), is
        // retried; any other refusal is final.
        if let Some(s) = &lost
            && !retryable(s)
        {
            return Err(st(s.clone()));
        }
        eprintln!("watch: connection lost; resuming after version {after}");
        tokio::time::sleep(RECONNECT).await;
        if let Ok(clients) = cli.clients().await {
            *c = clients.secrets;
        }
    }
}

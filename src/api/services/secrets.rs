//! `sigil.v1.Secrets`: versioned secrets, their rotation, and watching them
//! (SPEC §3.3 `sigil secret`). Every call passes the gate with the secret's
//! path as the resource, so the grants decide; reads are recorded with the
//! version read, writes with the version written. Values never reach a log.

use crate::api::ApiError;
use crate::api::gate::Gate;
use crate::api::pb::{self, secrets_server::Secrets as SecretsApi};
use crate::clock;
use crate::id::Ttl;
use crate::policy::{Action, Resource};
use crate::secret::Secret;
use crate::secrets::{
    CustomMetadata, Fields, GeneratorSpec, RotationSettings, RotationState, SecretMeta, SecretPath,
};
use crate::server::Server;
use crate::server::secrets::{Read, SecretsError, VersionsChange};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

mod watch;

#[derive(Debug)]
pub(crate) struct SecretsService {
    gate: Gate,
    server: Arc<Server>,
}

impl SecretsService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }

    fn now(&self) -> u64 {
        clock::unix_seconds(self.server.now())
    }
}

pub(crate) fn secret(path: &str) -> Resource {
    Resource::new("secret", Some(path.to_owned()))
}

fn parse(path: &str) -> Result<SecretPath, ApiError> {
    SecretPath::parse(path).map_err(|e| ApiError::Secrets(e.into()))
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

pub(super) fn version_to_pb(path: &SecretPath, r: Read) -> pb::SecretVersion {
    pb::SecretVersion {
        path: path.to_string(),
        version: r.version,
        fields: r
            .fields
            .iter()
            .map(|(k, v)| (k.to_owned(), v.expose().to_vec()))
            .collect(),
        created_at: secs(r.meta.created),
        previous: r.previous,
    }
}

fn meta_to_pb(path: &SecretPath, m: &SecretMeta) -> pb::SecretMetadata {
    let opt = |t: Option<u64>| t.map_or(0, secs);
    pb::SecretMetadata {
        path: path.to_string(),
        current_version: m.current,
        oldest_version: m.oldest,
        max_versions: m.max_versions,
        created_at: secs(m.created),
        updated_at: secs(m.updated),
        custom: m.custom.pairs().clone().into_iter().collect(),
        versions: m
            .versions
            .iter()
            .map(|(v, vm)| pb::VersionInfo {
                version: *v,
                created_at: secs(vm.created),
                deleted_at: opt(vm.deleted),
                destroyed_at: opt(vm.destroyed),
                previous_until: opt(vm.previous_until),
            })
            .collect(),
        rotates: m.rotation.is_some(),
    }
}

fn rotation_to_pb(path: &SecretPath, r: Option<&RotationState>) -> pb::RotationStatus {
    let Some(r) = r else {
        return pb::RotationStatus {
            path: path.to_string(),
            ..Default::default()
        };
    };
    pb::RotationStatus {
        path: path.to_string(),
        enabled: true,
        every_seconds: secs(r.settings.every),
        window_seconds: secs(r.settings.window),
        grace_seconds: secs(r.settings.grace),
        generator: r.settings.generator.clone(),
        next_due: secs(r.next_due),
        failures: r.failures,
        last_error: r.last_error.clone().unwrap_or_default(),
        retry_at: r.retry_at.map_or(0, secs),
        last_rotated: r.last_rotated.map_or(0, secs),
        pending: r.pending.is_some(),
        retiring: r.retiring.iter().map(|x| x.version).collect(),
    }
}

/// The request's fields, moved into zeroizing buffers as they are taken.
fn fields_from_pb(fields: std::collections::HashMap<String, Vec<u8>>) -> Result<Fields, ApiError> {
    Fields::new(
        fields
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
    )
    .map_err(|e| ApiError::Secrets(e.into()))
}

fn ttl(what: &str, secs: i64) -> Result<Option<Ttl>, ApiError> {
    if secs == 0 {
        return Ok(None);
    }
    Ttl::from_wire(secs)
        .map(Some)
        .map_err(|e| ApiError::InvalidArgument(format!("{what}: {e}")))
}

/// What an outcome record says about a failure: the error's own message
/// (it names rules and versions, never values).
fn failed<T>(r: &Result<T, SecretsError>) -> Option<String> {
    r.as_ref().err().map(ToString::to_string)
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// What a secret call's record says it did: `done` of its value, or why it
/// failed.
fn outcome<T>(
    result: &Result<T, SecretsError>,
    done: impl FnOnce(&T) -> String,
) -> Result<String, String> {
    match result {
        Ok(v) => Ok(done(v)),
        Err(_) => Err(failed(result).unwrap_or_default()),
    }
}

/// A write to a secret through the gate: recorded before it acts, and its
/// outcome after (shared by the gRPC and HTTP APIs).
pub(crate) async fn gated_write<T: Send>(
    gate: &Gate,
    ext: &http::Extensions,
    action: Action,
    path: &str,
    act: impl std::future::Future<Output = Result<T, SecretsError>>,
    done: impl FnOnce(&T) -> String,
) -> Result<T, ApiError> {
    let resource = secret(path);
    gate.authorize_parts(ext, action, resource.clone()).await?;
    let result = act.await;
    let outcome = outcome(&result, done);
    gate.record_outcome(ext, action, &resource, outcome).await?;
    Ok(result?)
}

/// A read of a secret through the gate: decided first, recorded after with
/// what was read (shared by the gRPC and HTTP APIs).
pub(crate) async fn gated_read<T: Send>(
    gate: &Gate,
    ext: &http::Extensions,
    action: Action,
    path: &str,
    act: impl std::future::Future<Output = Result<T, SecretsError>>,
    done: impl FnOnce(&T) -> String,
) -> Result<T, ApiError> {
    let decided = gate.decide(ext, action, secret(path)).await?;
    let result = act.await;
    let outcome = outcome(&result, done);
    decided.record(outcome).await?;
    Ok(result?)
}

impl SecretsService {
    async fn write<T: Send>(
        &self,
        ext: &http::Extensions,
        action: Action,
        path: &str,
        act: impl std::future::Future<Output = Result<T, SecretsError>>,
        done: impl FnOnce(&T) -> String,
    ) -> Result<T, Status> {
        Ok(gated_write(&self.gate, ext, action, path, act, done).await?)
    }

    /// Delete, undelete or destroy: one write of some versions' state.
    async fn versions(
        &self,
        req: Request<pb::SecretVersionsRequest>,
        change: VersionsChange,
    ) -> Result<Response<pb::SecretVersionsResponse>, Status> {
        let (action, verb) = match change {
            VersionsChange::Delete => (Action::SecretDelete, "deleted"),
            VersionsChange::Undelete => (Action::SecretUndelete, "undeleted"),
            VersionsChange::Destroy => (Action::SecretDestroy, "destroyed"),
        };
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        let act = self
            .server
            .secrets()
            .change_versions(&path, change, msg.versions, self.now());
        let changed = self
            .write(req.extensions(), action, &msg.path, act, |c| {
                format!("{verb} versions {c:?}")
            })
            .await?;
        Ok(Response::new(pb::SecretVersionsResponse { changed }))
    }

    async fn read<T: Send>(
        &self,
        ext: &http::Extensions,
        action: Action,
        path: &str,
        act: impl std::future::Future<Output = Result<T, SecretsError>>,
        done: impl FnOnce(&T) -> String,
    ) -> Result<T, Status> {
        Ok(gated_read(&self.gate, ext, action, path, act, done).await?)
    }
}

#[tonic::async_trait]
impl SecretsApi for SecretsService {
    async fn put(
        &self,
        req: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let (_, ext, msg) = req.into_parts();
        let cas = msg.has_cas.then_some(msg.cas);
        let path = parse(&msg.path)?;
        // Fields are checked before the decision is recorded, so a refused
        // put writes nothing at all; the values move into zeroizing buffers.
        let fields = fields_from_pb(msg.fields)?;
        let act = self.server.secrets().put(&path, fields, cas, self.now());
        let version = self
            .write(&ext, Action::SecretPut, &msg.path, act, |v| {
                format!("wrote version {v}")
            })
            .await?;
        Ok(Response::new(pb::PutSecretResponse { version }))
    }

    async fn get(
        &self,
        req: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::SecretVersion>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        let act = self.server.secrets().get(&path, msg.version, self.now());
        let read = self
            .read(req.extensions(), Action::SecretGet, &msg.path, act, |r| {
                format!("read version {}", r.version)
            })
            .await?;
        Ok(Response::new(version_to_pb(&path, read)))
    }

    async fn list(
        &self,
        req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let prefix = req.get_ref().prefix.trim_end_matches('/').to_owned();
        if !prefix.is_empty() {
            parse(&prefix)?;
        }
        let act = self.server.secrets().list(&prefix);
        let all = self
            .read(req.extensions(), Action::SecretList, &prefix, act, |l| {
                format!("listed {} paths before filtering", l.len())
            })
            .await?;
        // Only what the caller may read, each asked of the same policy.
        let secrets = all
            .into_iter()
            .filter(|(p, _)| {
                self.gate
                    .permits(req.extensions(), Action::SecretGet, secret(p.as_str()))
            })
            .map(|(p, m)| pb::SecretListing {
                path: p.to_string(),
                current_version: m.current,
            })
            .collect();
        Ok(Response::new(pb::ListSecretsResponse { secrets }))
    }

    async fn meta(
        &self,
        req: Request<pb::SecretMetaRequest>,
    ) -> Result<Response<pb::SecretMetadata>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        if msg.set_max_versions || msg.set_custom {
            let custom = if msg.set_custom {
                Some(
                    CustomMetadata::new(msg.custom.clone().into_iter().collect())
                        .map_err(|e| ApiError::Secrets(e.into()))?,
                )
            } else {
                None
            };
            let max = msg.set_max_versions.then_some(msg.max_versions);
            let act = self
                .server
                .secrets()
                .set_meta(&path, max, custom, self.now());
            let meta = self
                .write(
                    req.extensions(),
                    Action::SecretMetaWrite,
                    &msg.path,
                    act,
                    |m| format!("metadata set: max_versions {}", m.max_versions),
                )
                .await?;
            return Ok(Response::new(meta_to_pb(&path, &meta)));
        }
        let act = self.server.secrets().meta(&path);
        let meta = self
            .read(req.extensions(), Action::SecretMeta, &msg.path, act, |m| {
                format!("metadata at version {}", m.current)
            })
            .await?;
        Ok(Response::new(meta_to_pb(&path, &meta)))
    }

    async fn delete(
        &self,
        req: Request<pb::SecretVersionsRequest>,
    ) -> Result<Response<pb::SecretVersionsResponse>, Status> {
        self.versions(req, VersionsChange::Delete).await
    }

    async fn undelete(
        &self,
        req: Request<pb::SecretVersionsRequest>,
    ) -> Result<Response<pb::SecretVersionsResponse>, Status> {
        self.versions(req, VersionsChange::Undelete).await
    }

    async fn destroy(
        &self,
        req: Request<pb::SecretVersionsRequest>,
    ) -> Result<Response<pb::SecretVersionsResponse>, Status> {
        self.versions(req, VersionsChange::Destroy).await
    }

    type WatchStream = Stream<pb::SecretVersion>;

    async fn watch(
        &self,
        req: Request<pb::WatchSecretRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        // Authorized (and recorded) once here; every version it then sends is
        // decided and recorded again, so a grant withdrawn ends the stream.
        self.gate
            .authorize(&req, Action::SecretWatch, secret(&msg.path))
            .await?;
        let stream = watch::start(
            self.gate.clone(),
            self.server.clone(),
            req.extensions().clone(),
            path,
            msg.after_version,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_rotation(
        &self,
        req: Request<pb::SetRotationRequest>,
    ) -> Result<Response<pb::RotationStatus>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        let every = ttl("every", msg.every_seconds)?.ok_or_else(|| {
            ApiError::InvalidArgument("every: a rotation period is required".into())
        })?;
        let spec = GeneratorSpec::parse(&msg.generator).map_err(|e| ApiError::Secrets(e.into()))?;
        // The server reads the connection secret with its own authority and
        // changes roles with the credentials in it: whoever points a rotation
        // at it must be allowed to read it themselves, or a narrow `rotate`
        // grant would borrow the database admin's rights.
        if let GeneratorSpec::Postgres { connection, .. } = &spec {
            self.gate
                .authorize(&req, Action::SecretGet, secret(connection.as_str()))
                .await
                .map_err(|e| match e {
                    ApiError::Denied(why) => ApiError::Denied(format!(
                        "a postgres rotation needs read on its connection secret {connection}: {why}"
                    )),
                    other => other,
                })?;
        }
        let settings = RotationSettings::new(
            every,
            ttl("window", msg.window_seconds)?,
            ttl("grace", msg.grace_seconds)?,
            &spec,
        )
        .map_err(|e| ApiError::Secrets(e.into()))?;
        let act = self
            .server
            .secrets()
            .set_rotation(&path, settings, self.now());
        let state = self
            .write(
                req.extensions(),
                Action::SecretRotationSet,
                &msg.path,
                act,
                |s| {
                    format!(
                        "rotation set: {} every {}s",
                        s.settings.generator, s.settings.every
                    )
                },
            )
            .await?;
        Ok(Response::new(rotation_to_pb(&path, Some(&state))))
    }

    async fn show_rotation(
        &self,
        req: Request<pb::SecretPathRequest>,
    ) -> Result<Response<pb::RotationStatus>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        let act = self.server.secrets().rotation(&path);
        let state = self
            .read(
                req.extensions(),
                Action::SecretRotationShow,
                &msg.path,
                act,
                |_| "rotation shown".to_owned(),
            )
            .await?;
        Ok(Response::new(rotation_to_pb(&path, Some(&state))))
    }

    async fn disable_rotation(
        &self,
        req: Request<pb::SecretPathRequest>,
    ) -> Result<Response<pb::RotationStatus>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        let act = self.server.secrets().disable_rotation(&path, self.now());
        self.write(
            req.extensions(),
            Action::SecretRotationDisable,
            &msg.path,
            act,
            |()| "rotation disabled".to_owned(),
        )
        .await?;
        Ok(Response::new(rotation_to_pb(&path, None)))
    }

    async fn rotate(
        &self,
        req: Request<pb::SecretPathRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let msg = req.get_ref().clone();
        let path = parse(&msg.path)?;
        let server = self.server.clone();
        let now = move || clock::unix_seconds(server.now());
        let act = self.server.secrets().rotate(&path, &now);
        let rotated = self
            .write(
                req.extensions(),
                Action::SecretRotate,
                &msg.path,
                act,
                |r| format!("rotated to version {}", r.version),
            )
            .await?;
        Ok(Response::new(pb::PutSecretResponse {
            version: rotated.version,
        }))
    }
}

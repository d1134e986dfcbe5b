//! Rotating a secret: generate the next value, store it as pending, apply it
//! outside sigil (the `postgres` generator), then make it the current version
//! and keep the replaced one readable as `previous` for the grace period;
//! after grace, retire the replaced one (lock its role, delete the version).
//!
//! Why "store, then apply": the new value is durable in sigil before the
//! database is changed. A crash in between leaves a pending value; the next
//! attempt applies the same value again (setting a password twice is
//! harmless) instead of making a new one, so sigil and the database can never
//! disagree about a credential that nobody has a copy of.

use super::postgres::{self, AdminConn, RoleName};
use super::records::{Write, data_key, load_meta, pending_key, read_fields, update};
use super::{Secrets, SecretsError};
use crate::secret::Secret;
use crate::secrets::{
    Charset, Fields, GeneratorSpec, PendingRotation, RotationSettings, RotationState, SecretPath,
    generate_local, merge, random_string,
};
use crate::server::blocking;

/// Length of generated database passwords (alphanumeric: no quoting issues
/// in connection strings, ~190 bits).
const DB_PASSWORD_LENGTH: u32 = 32;

/// The outcome of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// The new current version.
    pub version: u64,
    /// The replaced version, readable as `previous` until its grace ends.
    pub previous: Option<u64>,
}

/// Whether a generator's value must take effect outside sigil (and so is
/// stored as pending before it does).
fn applies_outside(spec: &GeneratorSpec) -> bool {
    matches!(spec, GeneratorSpec::Postgres { .. })
}

fn text(s: &Secret) -> Option<&str> {
    std::str::from_utf8(s.expose()).ok()
}

impl Secrets {
    fn jitter(&self) -> f64 {
        let mut b = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&self.shared.rng, &mut b);
        f64::from(u32::from_be_bytes(b)) / (f64::from(u32::MAX) + 1.0)
    }

    /// Sets (or changes) the rotation of `path`. A path with nothing readable
    /// yet rotates at once; otherwise the first rotation is one period away.
    pub async fn set_rotation(
        &self,
        path: &SecretPath,
        settings: RotationSettings,
        now: u64,
    ) -> Result<RotationState, SecretsError> {
        settings.generator()?;
        let (s, p, jitter) = (self.shared.clone(), path.clone(), self.jitter());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.unwrap_or_else(|| crate::secrets::SecretMeta::new(now));
                let due_now = meta.readable(0).is_err();
                let mut state = RotationState::new(settings.clone(), now, due_now, jitter);
                // Progress survives a change of settings: a begun rotation is
                // still finished, replaced versions are still retired.
                // A begun rotation and the serving role belong to the generator
                // that made them: with another generator (other roles, another
                // server), a pending value must not be applied, so it is dropped.
                let mut w = Write::default();
                if let Some(old) = meta.rotation.take() {
                    state.retiring = old.retiring;
                    state.last_rotated = old.last_rotated;
                    if old.settings.generator == state.settings.generator {
                        state.pending = old.pending;
                        state.serving = old.serving;
                    } else {
                        w.deletes.push(pending_key(&p));
                    }
                }
                meta.rotation = Some(state);
                meta.updated = now;
                Ok((meta.clone(), w, meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        meta.rotation
            .ok_or_else(|| SecretsError::NoRotation(path.to_string()))
    }

    /// The rotation of `path`.
    pub async fn rotation(&self, path: &SecretPath) -> Result<RotationState, SecretsError> {
        self.meta(path)
            .await?
            .rotation
            .ok_or_else(|| SecretsError::NoRotation(path.to_string()))
    }

    /// Stops rotating `path`. A begun rotation's pending value is dropped;
    /// versions already written stay as they are.
    pub async fn disable_rotation(&self, path: &SecretPath, now: u64) -> Result<(), SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                let Some(state) = meta.rotation.take() else {
                    return Err(SecretsError::NoRotation(p.to_string()));
                };
                // Dropping the state now would leave a replaced database role
                // able to log in for good: it is locked when its grace ends.
                if state.retiring.iter().any(|r| r.role.is_some()) {
                    return Err(SecretsError::RetirementPending {
                        path: p.to_string(),
                        until: state.in_grace().unwrap_or(now),
                    });
                }
                meta.updated = now;
                let w = Write {
                    puts: Vec::new(),
                    deletes: vec![pending_key(&p)],
                };
                Ok((meta.clone(), w, meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(())
    }

    /// Rotates `path` now: finishes a begun rotation, or begins and finishes a
    /// new one. `now` is read at each step. A failure is recorded in the
    /// rotation's state (and retried by the task) before it is returned.
    pub async fn rotate(
        &self,
        path: &SecretPath,
        now: &(dyn Fn() -> u64 + Send + Sync),
    ) -> Result<Rotated, SecretsError> {
        let _one_at_a_time = self.shared.rotating.lock().await;
        self.rotate_locked(path, now).await
    }

    /// Rotates `path` if a rotation is still due at `now()` once this caller
    /// holds the rotation lock: the task plans from a snapshot, and a rotation
    /// done by hand meanwhile must not be followed by a second one.
    pub async fn rotate_if_due(
        &self,
        path: &SecretPath,
        now: &(dyn Fn() -> u64 + Send + Sync),
    ) -> Result<Option<Rotated>, SecretsError> {
        let _one_at_a_time = self.shared.rotating.lock().await;
        let due = self
            .meta(path)
            .await?
            .rotation
            .is_some_and(|r| r.rotate_at() <= now());
        if !due {
            return Ok(None);
        }
        self.rotate_locked(path, now).await.map(Some)
    }

    async fn rotate_locked(
        &self,
        path: &SecretPath,
        now: &(dyn Fn() -> u64 + Send + Sync),
    ) -> Result<Rotated, SecretsError> {
        let result = async {
            let (spec, fields) = self.begin_locked(path, now()).await?;
            self.apply(&spec, &fields).await?;
            self.commit(path, fields, now()).await
        }
        .await;
        if let Err(e) = &result
            && !matches!(e, SecretsError::NotFound(_) | SecretsError::NoRotation(_))
        {
            self.record_failure(path, now(), e.to_string()).await?;
        }
        result
    }

    /// Begins a rotation of `path` and stops: for a generator that changes
    /// something outside sigil (`postgres`), the new value is stored as
    /// pending and nothing else happens. What a crash right after the store
    /// write leaves behind; the next [`Secrets::rotate`] finishes it with the
    /// same value. Returns the pending fields.
    pub async fn begin_rotation(
        &self,
        path: &SecretPath,
        now: u64,
    ) -> Result<Fields, SecretsError> {
        let _one_at_a_time = self.shared.rotating.lock().await;
        Ok(self.begin_locked(path, now).await?.1)
    }

    async fn begin_locked(
        &self,
        path: &SecretPath,
        now: u64,
    ) -> Result<(GeneratorSpec, Fields), SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let (meta, pending, previous) = blocking::run(move || {
            let meta = load_meta(&s.store, &p)?
                .0
                .ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
            let pending = read_fields(&s.store, &pending_key(&p))?;
            let previous = match meta.readable(0) {
                Ok(v) => read_fields(&s.store, &data_key(&p, v))?,
                Err(_) => None,
            };
            Ok::<_, SecretsError>((meta, pending, previous))
        })
        .await?;
        let state = meta
            .rotation
            .as_ref()
            .ok_or_else(|| SecretsError::NoRotation(path.to_string()))?;
        let spec = state.settings.generator()?;
        if let (Some(_), Some(fields)) = (&state.pending, pending) {
            return Ok((spec, fields));
        }
        // The role not serving is the one still in grace until it is
        // retired: changing its password now would cut off the consumers
        // grace promised it to.
        if applies_outside(&spec)
            && let Some(until) = state.in_grace()
        {
            return Err(SecretsError::GraceInProgress {
                path: path.to_string(),
                until,
            });
        }
        let serving = state.serving.clone();
        let fields = self
            .generate(&spec, previous.as_ref(), serving.as_deref(), now)
            .await?;
        // A value that only lives in sigil needs no pending stage: nothing
        // outside can disagree with it, so it is committed directly (one
        // store write instead of two).
        if !applies_outside(&spec) {
            return Ok((spec, fields));
        }
        let (s, p, f) = (self.shared.clone(), path.clone(), fields.clone());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                let r = meta
                    .rotation
                    .as_mut()
                    .ok_or_else(|| SecretsError::NoRotation(p.to_string()))?;
                r.pending = Some(PendingRotation { started: now });
                let w = Write {
                    puts: vec![(pending_key(&p), f.encode())],
                    deletes: Vec::new(),
                };
                Ok((meta.clone(), w, meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok((spec, fields))
    }

    async fn admin_conn(
        &self,
        connection: &SecretPath,
        now: u64,
    ) -> Result<AdminConn, SecretsError> {
        let err = |reason: String| SecretsError::Connection {
            path: connection.to_string(),
            reason,
        };
        let read = self
            .get(connection, 0, now)
            .await
            .map_err(|e| err(e.to_string()))?;
        AdminConn::from_fields(|k| read.fields.get(k)).map_err(|e| err(e.to_string()))
    }

    async fn generate(
        &self,
        spec: &GeneratorSpec,
        previous: Option<&Fields>,
        serving: Option<&str>,
        now: u64,
    ) -> Result<Fields, SecretsError> {
        let GeneratorSpec::Postgres { connection, roles } = spec else {
            return Ok(generate_local(spec, previous, &self.shared.rng)?);
        };
        let admin = self.admin_conn(connection, now).await?;
        // Alternate: the role not serving now gets the new password, so the
        // one consumers hold keeps working through the grace period.
        let serving = serving.or_else(|| previous.and_then(|f| f.get("username")).and_then(text));
        let [a, b] = roles;
        let next = if serving == Some(a.as_str()) { b } else { a };
        let password = random_string(&self.shared.rng, DB_PASSWORD_LENGTH, Charset::Alnum)?;
        let fields = vec![
            ("username".to_owned(), Secret::from_slice(next.as_bytes())),
            ("password".to_owned(), password),
            ("host".to_owned(), Secret::from_slice(admin.host.as_bytes())),
            ("port".to_owned(), Secret::from(admin.port.to_string())),
            (
                "dbname".to_owned(),
                Secret::from_slice(admin.dbname.as_bytes()),
            ),
        ];
        Ok(merge(previous, fields)?)
    }

    /// Makes a generated value take effect outside sigil, and proves it does.
    async fn apply(&self, spec: &GeneratorSpec, fields: &Fields) -> Result<(), SecretsError> {
        let GeneratorSpec::Postgres { connection, roles } = spec else {
            return Ok(());
        };
        let admin = self.admin_conn(connection, 0).await?;
        let apply = |e: postgres::PgError| SecretsError::Apply(e.to_string());
        let [a, b] = roles;
        let (a, b) = (
            RoleName::parse(a).map_err(apply)?,
            RoleName::parse(b).map_err(apply)?,
        );
        postgres::ensure_roles(&admin, &[&a, &b])
            .await
            .map_err(apply)?;
        let role = fields
            .get("username")
            .and_then(text)
            .ok_or_else(|| SecretsError::Apply("pending value has no username".into()))?;
        // Only the generator's own two roles are ever changed.
        if role != a.as_str() && role != b.as_str() {
            return Err(SecretsError::Apply(format!(
                "role {role:?} is not one of the generator's roles"
            )));
        }
        let role = RoleName::parse(role).map_err(apply)?;
        let password = fields
            .get("password")
            .ok_or_else(|| SecretsError::Apply("pending value has no password".into()))?;
        postgres::set_password(&admin, &role, password)
            .await
            .map_err(apply)?;
        // Only a value that logs in becomes current.
        postgres::check_login(&admin, &role, password)
            .await
            .map_err(apply)
    }

    async fn commit(
        &self,
        path: &SecretPath,
        fields: Fields,
        now: u64,
    ) -> Result<Rotated, SecretsError> {
        let (s, p, jitter) = (self.shared.clone(), path.clone(), self.jitter());
        let (rotated, meta) = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                let previous = meta.readable(0).ok();
                let (version, pruned) = meta.add_version(now);
                let grace = meta.rotation.as_ref().map_or(0, |r| r.settings.grace);
                if let Some(prev) = previous.and_then(|v| meta.versions.get_mut(&v)) {
                    prev.previous_until = Some(now.saturating_add(grace));
                }
                let kept = previous.filter(|v| meta.versions.contains_key(v));
                if let Some(r) = meta.rotation.as_mut() {
                    let serving = r
                        .settings
                        .generator()
                        .ok()
                        .filter(applies_outside)
                        .and_then(|_| fields.get("username").and_then(text).map(str::to_owned));
                    // Even a replaced version pruned at once is retired: its
                    // role is still locked when grace ends.
                    r.succeeded(now, previous, serving, jitter);
                }
                let mut deletes: Vec<Vec<u8>> = pruned.iter().map(|v| data_key(&p, *v)).collect();
                deletes.push(pending_key(&p));
                let w = Write {
                    puts: vec![(data_key(&p, version), fields.encode())],
                    deletes,
                };
                Ok((
                    meta.clone(),
                    w,
                    (
                        Rotated {
                            version,
                            previous: kept,
                        },
                        meta,
                    ),
                ))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(rotated)
    }

    async fn record_failure(
        &self,
        path: &SecretPath,
        now: u64,
        error: String,
    ) -> Result<(), SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                if let Some(r) = meta.rotation.as_mut() {
                    r.failed(now, error.clone());
                }
                Ok((meta.clone(), Write::default(), meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(())
    }

    /// Retires the replaced versions of `path` whose grace is over at `now`:
    /// locks a database role no longer serving, then deletes the version.
    /// Returns the versions retired.
    pub async fn retire_due(&self, path: &SecretPath, now: u64) -> Result<Vec<u64>, SecretsError> {
        let _one_at_a_time = self.shared.rotating.lock().await;
        let meta = self.meta(path).await?;
        let Some(state) = meta.rotation.clone() else {
            return Ok(Vec::new());
        };
        let mut retired = Vec::new();
        for version in state.due_retirements(now) {
            // Never the role serving now (a rotation set up anew may have made
            // the same role current again).
            let role = state
                .retiring_role(version)
                .filter(|r| Some(*r) != state.serving.as_deref());
            match self
                .retire_one(path, &state.settings, version, role, now)
                .await
            {
                Ok(()) => retired.push(version),
                Err(e) => {
                    let why = e.to_string();
                    self.update_rotation(path, move |r| r.retire_failed(version, now, why.clone()))
                        .await?;
                    return Err(e);
                }
            }
        }
        Ok(retired)
    }

    async fn retire_one(
        &self,
        path: &SecretPath,
        settings: &RotationSettings,
        version: u64,
        role: Option<&str>,
        now: u64,
    ) -> Result<(), SecretsError> {
        if let GeneratorSpec::Postgres { connection, .. } = settings.generator()?
            && let Some(role) = role
        {
            let admin = self.admin_conn(&connection, now).await?;
            let role = RoleName::parse(role).map_err(|e| SecretsError::Apply(e.to_string()))?;
            postgres::lock(&admin, &role)
                .await
                .map_err(|e| SecretsError::Apply(e.to_string()))?;
        }
        let (s, p) = (self.shared.clone(), path.clone());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                if version != 0 && meta.versions.contains_key(&version) {
                    meta.delete(&[version], now)?;
                }
                if let Some(v) = meta.versions.get_mut(&version) {
                    v.previous_until = None;
                }
                if let Some(r) = meta.rotation.as_mut() {
                    r.retired(version);
                }
                Ok((meta.clone(), Write::default(), meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(())
    }

    async fn update_rotation(
        &self,
        path: &SecretPath,
        f: impl Fn(&mut RotationState) + Send + Sync + 'static,
    ) -> Result<(), SecretsError> {
        let (s, p) = (self.shared.clone(), path.clone());
        let meta = blocking::run(move || {
            update(&s.store, &p, |meta| {
                let mut meta = meta.ok_or_else(|| SecretsError::NotFound(p.to_string()))?;
                if let Some(r) = meta.rotation.as_mut() {
                    f(r);
                }
                Ok((meta.clone(), Write::default(), meta))
            })
        })
        .await?;
        self.changed(path, &meta);
        Ok(())
    }

    /// Every path's rotation schedule.
    pub fn schedules(&self) -> Vec<crate::secrets::Schedule> {
        crate::sync::lock(&self.shared.schedules)
            .values()
            .cloned()
            .collect()
    }

    /// Resolves when a schedule changed (or was loaded).
    pub async fn schedule_changed(&self) {
        self.shared.wake.notified().await;
    }
}

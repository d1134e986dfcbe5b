//! Login roles on a real PostgreSQL server, for the `postgres` rotation
//! generator: make sure the roles sigil manages exist, give one a new
//! password, prove that the password works, and lock a role out.
//!
//! This is edge code (it does network I/O); the rotation plan that decides
//! *when* to call it lives in the core. Every call opens its own short-lived
//! connection, is bounded by [`CALL_TIMEOUT`], and tells its caller what
//! failed through one [`PgError`] variant per failed step.
//!
//! Secrets: the admin password and role passwords stay in [`Secret`]. A new
//! role password never reaches the server in clear: sigil computes the
//! SCRAM-SHA-256 verifier itself and sends only that, so neither the
//! server's statement log nor `pg_stat_activity` can show the password.
//! Error messages carry only the SQLSTATE code and the server's primary
//! message, never a statement, a password or a verifier.
//!
//! Transport: plain TCP or a Unix socket (`NoTls`). SCRAM authentication
//! does not reveal the password to an eavesdropper, but the `ALTER ROLE`
//! statement (with its verifier) and the session itself are not protected
//! on a TCP network; use a Unix socket or loopback until TLS is wired in.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::secret::Secret;

/// Limit on opening the TCP or Unix-socket connection itself.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit on one whole public call: connecting, authenticating and every
/// statement it runs. A hung server must not hold up the rotation loop.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 = 63 bytes; a longer
/// name would silently become another role, so it is refused instead.
pub const ROLE_NAME_MAX_LEN: usize = 63;

/// Names PostgreSQL refuses for new roles, or that role specifications
/// read as keywords when unquoted. [`RESERVED_ROLE_PREFIX`] too.
const RESERVED_ROLE_NAMES: [&str; 5] = [
    "public",
    "none",
    "current_user",
    "current_role",
    "session_user",
];

/// PostgreSQL reserves this prefix for its predefined roles.
const RESERVED_ROLE_PREFIX: &str = "pg_";

/// Shown to the server as `application_name`, so a DBA can tell sigil's
/// sessions apart in `pg_stat_activity` and the log.
const APPLICATION_NAME: &str = "sigil";

/// Everything that can go wrong here, one variant per failed step. Messages
/// carry at most a validated role name, the SQLSTATE code and the server's
/// primary message: never a password, a verifier or a statement. The
/// `String` in server-side variants is that code and message, or the
/// client-side cause when no server answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// The named admin-connection field is absent from the secret.
    #[error("admin connection field `{0}` is missing")]
    MissingField(&'static str),
    /// The named admin-connection field is not UTF-8 text.
    #[error("admin connection field `{0}` is not UTF-8 text")]
    FieldNotUtf8(&'static str),
    /// The named admin-connection field is empty.
    #[error("admin connection field `{0}` is empty")]
    FieldEmpty(&'static str),
    /// `host` is neither a host name or IP address nor an absolute path to a
    /// Unix-socket directory.
    #[error("admin connection field `host` is not a host name, IP address or socket directory")]
    HostMalformed,
    /// `port` is not a decimal number.
    #[error("admin connection field `port` is not a decimal number")]
    PortNotANumber,
    /// `port` is a number outside 1..=65535.
    #[error("admin connection field `port` is not in 1..=65535")]
    PortOutOfRange,
    /// A role name is empty.
    #[error("role name is empty")]
    RoleNameEmpty,
    /// A role name is longer than [`ROLE_NAME_MAX_LEN`] bytes.
    #[error("role name is longer than {ROLE_NAME_MAX_LEN} bytes")]
    RoleNameTooLong,
    /// A role name does not start with `a`-`z` or `_`.
    #[error("role name must start with a-z or _")]
    RoleNameFirstChar,
    /// A role name has a character other than `a`-`z`, `0`-`9` or `_`.
    #[error("role name may contain only a-z, 0-9 and _")]
    RoleNameChar,
    /// A role name is one PostgreSQL reserves (`pg_*`, `public`, ...).
    #[error("role name is reserved by PostgreSQL")]
    RoleNameReserved,
    /// The role is the admin user itself: sigil never locks or re-keys the
    /// account it manages the others with.
    #[error("role `{0}` is the admin user; sigil does not manage it")]
    RoleIsAdmin(RoleName),
    /// A password to set is empty (PostgreSQL would clear the password).
    #[error("the new password is empty")]
    EmptyPassword,
    /// The computed SCRAM verifier is not what sigil can safely put in a
    /// string literal. Never expected; checked because the SQL depends on it.
    #[error("the computed SCRAM verifier has an unexpected form")]
    VerifierMalformed,
    /// Connecting or authenticating as the admin user failed.
    #[error("connecting to PostgreSQL as the admin user failed: {0}")]
    AdminConnect(String),
    /// Looking up or creating the role failed (not because it exists).
    #[error("creating role `{0}` failed: {1}")]
    CreateRole(RoleName, String),
    /// `ALTER ROLE ... LOGIN PASSWORD` failed.
    #[error("setting the password of role `{0}` failed: {1}")]
    SetPassword(RoleName, String),
    /// `ALTER ROLE ... NOLOGIN` failed.
    #[error("locking role `{0}` failed: {1}")]
    Lock(RoleName, String),
    /// The server refused to log the role in (SQLSTATE class 28): wrong
    /// password, role locked (`NOLOGIN`) or missing.
    #[error("PostgreSQL refused login as role `{0}`: {1}")]
    LoginRejected(RoleName, String),
    /// Logging in as the role failed before the server judged the
    /// credentials (unreachable, protocol error). Kept apart from
    /// [`PgError::LoginRejected`] so an outage is not taken for a bad password.
    #[error("connecting to PostgreSQL as role `{0}` failed: {1}")]
    LoginConnect(RoleName, String),
    /// Logged in as the role, but `SELECT 1` failed or returned something else.
    #[error("query as role `{0}` failed: {1}")]
    LoginQuery(RoleName, String),
    /// The named call did not finish within [`CALL_TIMEOUT`].
    #[error("PostgreSQL {0} did not finish within {CALL_TIMEOUT:?}")]
    TimedOut(&'static str),
}

/// Admin connection details, from a secret's fields `host`, `port`, `user`,
/// `password`, `dbname`. The admin role needs `CREATEROLE`, not `SUPERUSER`.
///
/// `Debug` shows the password only as its length ([`Secret`]'s `Debug`).
#[derive(Debug, Clone)]
pub struct AdminConn {
    /// Host name, IP address, or absolute path of a Unix-socket directory.
    pub host: String,
    /// TCP port, or the number in the socket file name (`.s.PGSQL.<port>`).
    pub port: u16,
    /// Admin role to log in as.
    pub user: String,
    /// Admin role's password.
    pub password: Secret,
    /// Database to connect to; roles are cluster-wide, so any one will do.
    pub dbname: String,
}

impl AdminConn {
    /// Reads the five fields through `get`. Each missing or malformed field
    /// gets its own [`PgError`] naming it; `port` must be 1..=65535.
    ///
    /// The named lifetime `'s` lets `get` lend from a map that outlives the
    /// call; with elision the result would have to live as long as the key.
    pub fn from_fields<'s>(get: impl Fn(&str) -> Option<&'s Secret>) -> Result<Self, PgError> {
        let host = text_field(&get, "host")?;
        if !host_is_well_formed(&host) {
            return Err(PgError::HostMalformed);
        }
        let port = parse_port(&text_field(&get, "port")?)?;
        let user = text_field(&get, "user")?;
        let password = get("password").ok_or(PgError::MissingField("password"))?;
        if password.is_empty() {
            return Err(PgError::FieldEmpty("password"));
        }
        let dbname = text_field(&get, "dbname")?;
        Ok(Self {
            host,
            port,
            user,
            password: password.clone(),
            dbname,
        })
    }

    /// Client configuration for logging in as `user` with `password` on this
    /// admin connection's server and database.
    fn config(&self, user: &str, password: &Secret) -> Config {
        let mut config = Config::new();
        // A host starting with `/` is a Unix-socket directory to
        // tokio-postgres; anything else is resolved as a TCP host.
        config
            .host(&self.host)
            .port(self.port)
            .user(user)
            // tokio-postgres keeps its own (unzeroized) copy until the
            // Config is dropped, right after connecting; it cannot take a
            // borrowed or zeroizing buffer.
            .password(password.expose())
            .dbname(&self.dbname)
            .application_name(APPLICATION_NAME)
            .connect_timeout(CONNECT_TIMEOUT);
        config
    }
}

/// Reads a non-empty UTF-8 field.
fn text_field<'s>(
    get: &impl Fn(&str) -> Option<&'s Secret>,
    field: &'static str,
) -> Result<String, PgError> {
    let value = get(field).ok_or(PgError::MissingField(field))?;
    let text = std::str::from_utf8(value.expose()).map_err(|_| PgError::FieldNotUtf8(field))?;
    if text.is_empty() {
        return Err(PgError::FieldEmpty(field));
    }
    Ok(text.to_owned())
}

/// An absolute socket directory, or host-name / IPv4 / IPv6 characters only
/// (no spaces, commas or `=` that a connection string would split on).
fn host_is_well_formed(host: &str) -> bool {
    if host.starts_with('/') {
        return !host.chars().any(char::is_control);
    }
    host.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// Decimal digits only (no sign, no spaces), then 1..=65535.
fn parse_port(text: &str) -> Result<u16, PgError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PgError::PortNotANumber);
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PgError::PortOutOfRange),
    }
}

/// A role name sigil manages: `[a-z_][a-z0-9_]{0,62}` and not reserved.
/// Lower case only, so the quoted name in SQL is the name a person types
/// unquoted. [`RoleName::parse`] is the only way to make one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Checks `s` against the rules above, each broken rule its own error.
    pub fn parse(s: &str) -> Result<Self, PgError> {
        let mut chars = s.chars();
        let first = chars.next().ok_or(PgError::RoleNameEmpty)?;
        if s.len() > ROLE_NAME_MAX_LEN {
            return Err(PgError::RoleNameTooLong);
        }
        if !(first.is_ascii_lowercase() || first == '_') {
            return Err(PgError::RoleNameFirstChar);
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(PgError::RoleNameChar);
        }
        if s.starts_with(RESERVED_ROLE_PREFIX) || RESERVED_ROLE_NAMES.contains(&s) {
            return Err(PgError::RoleNameReserved);
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier. The parse rules leave no `"` to
    /// escape; quoting still keeps keywords (`user`, `all`) from being read
    /// as SQL.
    fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Creates each role in `roles` that does not exist yet, as `NOLOGIN`, so it
/// cannot be used until [`set_password`] gives it a password. Idempotent, and
/// safe against a concurrent caller creating the same role.
pub async fn ensure_roles(admin: &AdminConn, roles: &[&RoleName]) -> Result<(), PgError> {
    for role in roles {
        refuse_admin_role(admin, role)?;
    }
    bounded("ensure_roles", async {
        let client = connect_admin(admin).await?;
        for role in roles {
            create_if_missing(&client, role).await?;
        }
        Ok(())
    })
    .await
}

/// Creates `role` unless it exists. Two callers can both see it missing; the
/// loser then gets `duplicate_object`, or `unique_violation` when it raced
/// the winner's insert, and succeeds once the role is confirmed to exist.
async fn create_if_missing(client: &Client, role: &RoleName) -> Result<(), PgError> {
    if role_exists(client, role).await? {
        return Ok(());
    }
    let sql = format!("CREATE ROLE {} NOLOGIN", role.quoted());
    let Err(e) = client.batch_execute(&sql).await else {
        tracing::info!(role = %role, "created PostgreSQL role (NOLOGIN)");
        return Ok(());
    };
    let lost_race = e.code() == Some(&SqlState::DUPLICATE_OBJECT)
        || e.code() == Some(&SqlState::UNIQUE_VIOLATION);
    if lost_race && role_exists(client, role).await? {
        tracing::debug!(role = %role, "role created concurrently by another caller");
        return Ok(());
    }
    Err(PgError::CreateRole(role.clone(), describe(&e)))
}

/// Whether `role` exists; the name goes in as a parameter, not as SQL.
async fn role_exists(client: &Client, role: &RoleName) -> Result<bool, PgError> {
    client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role.as_str()],
        )
        .await
        .map(|row| row.is_some())
        .map_err(|e| PgError::CreateRole(role.clone(), describe(&e)))
}

/// Gives `role` the password `password` and allows it to log in.
///
/// The statement carries a SCRAM-SHA-256 verifier computed here, never the
/// cleartext: PostgreSQL stores a verifier it is given as is, so the password
/// cannot show up in the server's statement log, `pg_stat_activity` or an
/// error report, and no server-side setting can change that.
pub async fn set_password(
    admin: &AdminConn,
    role: &RoleName,
    password: &Secret,
) -> Result<(), PgError> {
    refuse_admin_role(admin, role)?;
    if password.is_empty() {
        return Err(PgError::EmptyPassword);
    }
    let verifier = scram_verifier(password)?;
    let sql = format!(
        "ALTER ROLE {} WITH LOGIN PASSWORD '{verifier}'",
        role.quoted()
    );
    bounded("set_password", async {
        admin_execute(admin, &sql, |d| PgError::SetPassword(role.clone(), d)).await?;
        tracing::info!(role = %role, "set PostgreSQL role password (SCRAM verifier)");
        Ok(())
    })
    .await
}

/// The SCRAM-SHA-256 verifier for `password`, with a fresh random salt,
/// checked to be safe inside a single-quoted SQL literal.
fn scram_verifier(password: &Secret) -> Result<String, PgError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.expose());
    // The format is `SCRAM-SHA-256$<iter>:<salt>$<key>:<key>` in base64, so
    // no quote or backslash can occur; checking keeps the SQL safe even if a
    // library update changed that.
    let safe = verifier.starts_with("SCRAM-SHA-256$")
        && verifier
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'\\');
    if safe {
        Ok(verifier)
    } else {
        Err(PgError::VerifierMalformed)
    }
}

/// Logs in as `role` with `password` on the admin connection's host, port
/// and database over a fresh connection, and runs `SELECT 1`. This is the
/// same path a workload takes, so success means the credential works.
pub async fn check_login(
    admin: &AdminConn,
    role: &RoleName,
    password: &Secret,
) -> Result<(), PgError> {
    bounded("check_login", async {
        let client = connect(&admin.config(role.as_str(), password))
            .await
            .map_err(|e| login_error(role, &e))?;
        let query_error = |detail| PgError::LoginQuery(role.clone(), detail);
        let row = client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| query_error(describe(&e)))?;
        match row.try_get::<_, i32>(0) {
            Ok(1) => Ok(()),
            Ok(other) => Err(query_error(format!("SELECT 1 returned {other}"))),
            Err(e) => Err(query_error(describe(&e))),
        }
    })
    .await
}

/// Sorts a failed login into "the server said no" (SQLSTATE class 28:
/// invalid authorization, including wrong password and `NOLOGIN`) and
/// everything else.
fn login_error(role: &RoleName, e: &tokio_postgres::Error) -> PgError {
    let rejected = e.code().is_some_and(|code| code.code().starts_with("28"));
    if rejected {
        PgError::LoginRejected(role.clone(), describe(e))
    } else {
        PgError::LoginConnect(role.clone(), describe(e))
    }
}

/// Stops `role` from logging in (`NOLOGIN`). Its password stays, so
/// [`set_password`] re-enables it; sessions already open are not ended.
pub async fn lock(admin: &AdminConn, role: &RoleName) -> Result<(), PgError> {
    refuse_admin_role(admin, role)?;
    let sql = format!("ALTER ROLE {} NOLOGIN", role.quoted());
    bounded("lock", async {
        admin_execute(admin, &sql, |d| PgError::Lock(role.clone(), d)).await?;
        tracing::info!(role = %role, "locked PostgreSQL role (NOLOGIN)");
        Ok(())
    })
    .await
}

/// Locking or re-keying the admin role would cut sigil off from the server.
fn refuse_admin_role(admin: &AdminConn, role: &RoleName) -> Result<(), PgError> {
    if role.as_str() == admin.user {
        return Err(PgError::RoleIsAdmin(role.clone()));
    }
    Ok(())
}

/// Runs `call` within [`CALL_TIMEOUT`].
async fn bounded<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| PgError::TimedOut(operation))?
}

/// Logs in as the admin user.
async fn connect_admin(admin: &AdminConn) -> Result<Client, PgError> {
    connect(&admin.config(&admin.user, &admin.password))
        .await
        .map_err(|e| PgError::AdminConnect(describe(&e)))
}

/// Runs one statement (simple protocol, no parameters) as the admin user;
/// `failed` turns the server's answer into the caller's error.
async fn admin_execute(
    admin: &AdminConn,
    sql: &str,
    failed: impl FnOnce(String) -> PgError,
) -> Result<(), PgError> {
    let client = connect_admin(admin).await?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| failed(describe(&e)))
}

/// Opens a connection and drives it on its own task. The task ends by
/// itself once the returned client is dropped (tokio-postgres then sends
/// Terminate and closes); the timeout ends it when a server stops answering
/// while a request is outstanding, which would otherwise keep it forever.
async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        match tokio::time::timeout(CALL_TIMEOUT, connection).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %describe(&e), "PostgreSQL connection ended"),
            Err(_) => tracing::debug!("PostgreSQL connection abandoned after timeout"),
        }
    });
    Ok(client)
}

/// What a caller and the log may see of a tokio-postgres error: the SQLSTATE
/// code and the server's primary message (never its detail, hint or
/// statement position), or the client-side error and its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("SQLSTATE {}: {}", db.code().code(), db.message());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

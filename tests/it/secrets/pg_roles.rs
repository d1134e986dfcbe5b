//! The `postgres` generator's role management against the real PostgreSQL
//! server that scripts/test.sh starts (scripts/postgres.sh; the tests fail,
//! never skip, without its SIGIL_TEST_PG_* variables). That cluster logs every
//! statement, so the log test sees everything sigil sends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use sigil::secret::Secret;
use sigil::server::secrets::postgres::{
    AdminConn, PgError, RoleName, check_login, ensure_roles, lock, set_password,
};

/// Text no real password or verifier would contain, to search output for.
const MARKER: &str = "MARKERq7Zx";

pub(super) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is unset: these tests need a PostgreSQL cluster; run \
             `eval \"$(scripts/postgres.sh start DIR)\"` first"
        )
    })
}

pub(super) fn admin_fields() -> HashMap<&'static str, Secret> {
    [
        ("host", "SIGIL_TEST_PG_HOST"),
        ("port", "SIGIL_TEST_PG_PORT"),
        ("user", "SIGIL_TEST_PG_USER"),
        ("password", "SIGIL_TEST_PG_PASSWORD"),
        ("dbname", "SIGIL_TEST_PG_DBNAME"),
    ]
    .into_iter()
    .map(|(field, var)| (field, Secret::from(env(var))))
    .collect()
}

pub(super) fn admin() -> AdminConn {
    let fields = admin_fields();
    AdminConn::from_fields(|k| fields.get(k)).unwrap()
}

/// A role name unique to this test run, so reruns against the same cluster
/// and tests running in parallel do not share roles.
fn role(tag: &str) -> RoleName {
    RoleName::parse(&format!("t_{tag}_{}", std::process::id())).unwrap()
}

fn password(tag: &str) -> Secret {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Secret::from(format!("{tag}-{}-{n}-pw", std::process::id()))
}

/// Reads a role's `rolcanlogin` straight from the catalog, or None if the
/// role does not exist.
pub(super) async fn can_login(role: &RoleName) -> Option<bool> {
    let a = admin();
    let (client, conn) = tokio_postgres::Config::new()
        .host(&a.host)
        .port(a.port)
        .user(&a.user)
        .password(a.password.expose())
        .dbname(&a.dbname)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_opt(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&role.as_str()],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

fn is_login_rejected(r: &Result<(), PgError>) -> bool {
    matches!(r, Err(PgError::LoginRejected(..)))
}

#[tokio::test]
async fn ensure_roles_creates_nologin_roles_idempotently() {
    let admin = admin();
    let (a, b) = (role("ens_a"), role("ens_b"));
    ensure_roles(&admin, &[&a, &b]).await.unwrap();
    assert_eq!(can_login(&a).await, Some(false));
    assert_eq!(can_login(&b).await, Some(false));
    ensure_roles(&admin, &[&a, &b]).await.unwrap();
    assert_eq!(can_login(&a).await, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensure_roles_all_succeed() {
    // Fresh names, several callers on their own tasks walking the same list:
    // they race to create the same roles (duplicate_object or
    // unique_violation for the losers).
    let roles: Vec<RoleName> = (0..8).map(|i| role(&format!("conc{i}"))).collect();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let roles = roles.clone();
            tokio::spawn(async move {
                let refs: Vec<&RoleName> = roles.iter().collect();
                ensure_roles(&admin(), &refs).await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), Ok(()));
    }
    for r in &roles {
        assert_eq!(can_login(r).await, Some(false), "{r}");
    }
}

#[tokio::test]
async fn set_password_allows_login_and_wrong_password_is_rejected() {
    let admin = admin();
    let r = role("login");
    let pw = password("login");
    ensure_roles(&admin, &[&r]).await.unwrap();
    set_password(&admin, &r, &pw).await.unwrap();
    assert_eq!(can_login(&r).await, Some(true));
    check_login(&admin, &r, &pw).await.unwrap();

    let wrong = check_login(&admin, &r, &password("wrong")).await;
    assert!(is_login_rejected(&wrong), "{wrong:?}");
}

#[tokio::test]
async fn lock_stops_login_and_set_password_reenables() {
    let admin = admin();
    let r = role("lock");
    let pw = password("lock");
    ensure_roles(&admin, &[&r]).await.unwrap();
    set_password(&admin, &r, &pw).await.unwrap();
    check_login(&admin, &r, &pw).await.unwrap();

    lock(&admin, &r).await.unwrap();
    assert_eq!(can_login(&r).await, Some(false));
    let locked = check_login(&admin, &r, &pw).await;
    assert!(is_login_rejected(&locked), "{locked:?}");

    let next = password("lock");
    set_password(&admin, &r, &next).await.unwrap();
    check_login(&admin, &r, &next).await.unwrap();
    let old = check_login(&admin, &r, &pw).await;
    assert!(is_login_rejected(&old), "{old:?}");
}

#[tokio::test]
async fn unknown_role_login_is_rejected_and_lock_fails() {
    let admin = admin();
    let ghost = role("ghost");
    let login = check_login(&admin, &ghost, &password("ghost")).await;
    assert!(is_login_rejected(&login), "{login:?}");
    let locked = lock(&admin, &ghost).await;
    assert!(matches!(locked, Err(PgError::Lock(..))), "{locked:?}");
}

#[tokio::test]
async fn wrong_admin_password_is_admin_connect() {
    let mut admin = admin();
    admin.password = password("not-admin");
    let r = ensure_roles(&admin, &[&role("unused")]).await;
    assert!(matches!(r, Err(PgError::AdminConnect(_))), "{r:?}");
}

#[test]
fn role_name_rules() {
    let cases = [
        ("Bad", PgError::RoleNameFirstChar),
        ("\"x\"", PgError::RoleNameFirstChar),
        ("1abc", PgError::RoleNameFirstChar),
        ("a-b", PgError::RoleNameChar),
        ("aB", PgError::RoleNameChar),
        ("a b", PgError::RoleNameChar),
        ("", PgError::RoleNameEmpty),
        ("pg_signal_backend", PgError::RoleNameReserved),
        ("public", PgError::RoleNameReserved),
        ("none", PgError::RoleNameReserved),
        ("current_user", PgError::RoleNameReserved),
        ("session_user", PgError::RoleNameReserved),
    ];
    for (name, want) in cases {
        assert_eq!(RoleName::parse(name), Err(want), "{name:?}");
    }
    assert_eq!(
        RoleName::parse(&"a".repeat(64)),
        Err(PgError::RoleNameTooLong)
    );
    for ok in ["a", "_x", "app_ro_2", &"a".repeat(63)] {
        assert_eq!(RoleName::parse(ok).unwrap().as_str(), ok);
    }
}

fn from_fields_with(field: &str, value: Option<&str>) -> Result<AdminConn, PgError> {
    let mut fields: HashMap<&str, Secret> = [
        ("host", "127.0.0.1"),
        ("port", "5432"),
        ("user", "sigil_admin"),
        ("password", "pw"),
        ("dbname", "postgres"),
    ]
    .into_iter()
    .map(|(k, v)| (k, Secret::from(v.to_string())))
    .collect();
    match value {
        Some(v) => fields.insert(field, Secret::from(v.to_string())),
        None => fields.remove(field),
    };
    AdminConn::from_fields(|k| fields.get(k))
}

#[test]
fn admin_fields_each_fail_with_their_own_variant() {
    let cases = [
        ("port", None, PgError::MissingField("port")),
        ("port", Some("0"), PgError::PortOutOfRange),
        ("port", Some("65536"), PgError::PortOutOfRange),
        ("port", Some("x"), PgError::PortNotANumber),
        ("port", Some("+5"), PgError::PortNotANumber),
        ("port", Some(""), PgError::FieldEmpty("port")),
        ("host", None, PgError::MissingField("host")),
        ("host", Some("a b"), PgError::HostMalformed),
        ("host", Some("h1,h2"), PgError::HostMalformed),
        ("host", Some("host=x"), PgError::HostMalformed),
        ("host", Some("/a\nb"), PgError::HostMalformed),
        ("user", None, PgError::MissingField("user")),
        ("password", None, PgError::MissingField("password")),
        ("password", Some(""), PgError::FieldEmpty("password")),
        ("dbname", Some(""), PgError::FieldEmpty("dbname")),
    ];
    for (field, value, want) in cases {
        assert_eq!(
            from_fields_with(field, value).err(),
            Some(want),
            "{field}={value:?}"
        );
    }
    let not_utf8 = Secret::new(vec![0xff]);
    let r = AdminConn::from_fields(|k| (k == "host").then_some(&not_utf8));
    assert_eq!(r.err(), Some(PgError::FieldNotUtf8("host")));

    for host in ["/run/postgresql", "::1", "db.example.com", "10.0.0.7"] {
        let ok = from_fields_with("host", Some(host)).unwrap();
        assert_eq!((ok.host.as_str(), ok.port), (host, 5432));
    }
}

/// Every error a marker password can end up near, from real calls.
async fn errors_around(marker: &Secret) -> Vec<PgError> {
    let good = admin();
    let mut bad_admin = good.clone();
    bad_admin.password = marker.clone();
    let mut closed_port = good.clone();
    closed_port.port = 1;
    let r = role("leak");
    ensure_roles(&good, &[&r]).await.unwrap();
    vec![
        ensure_roles(&bad_admin, &[&r]).await.unwrap_err(),
        set_password(&closed_port, &r, marker).await.unwrap_err(),
        check_login(&good, &r, marker).await.unwrap_err(),
        check_login(&closed_port, &r, marker).await.unwrap_err(),
        set_password(&good, &role("leak_missing"), marker)
            .await
            .unwrap_err(),
    ]
}

#[tokio::test]
async fn no_password_in_debug_or_error_messages() {
    let marker = Secret::from(format!("{MARKER}-secret"));
    let mut admin = admin();
    admin.password = marker.clone();
    let shown = format!("{admin:?} {admin:#?}");
    assert!(!shown.contains(MARKER), "{shown}");

    let errors = errors_around(&marker).await;
    assert!(matches!(errors[0], PgError::AdminConnect(_)), "{errors:?}");
    assert!(matches!(errors[1], PgError::AdminConnect(_)), "{errors:?}");
    assert!(
        matches!(errors[2], PgError::LoginRejected(..)),
        "{errors:?}"
    );
    assert!(matches!(errors[3], PgError::LoginConnect(..)), "{errors:?}");
    assert!(matches!(errors[4], PgError::SetPassword(..)), "{errors:?}");
    for e in &errors {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(MARKER), "{shown}");
        assert!(!shown.contains("SCRAM-SHA-256$"), "{shown}");
    }
}

#[tokio::test]
async fn server_log_never_sees_the_cleartext_password() {
    let admin = admin();
    let r = role("logged");
    let marker = Secret::from(format!("{MARKER}-logged"));
    ensure_roles(&admin, &[&r]).await.unwrap();
    set_password(&admin, &r, &marker).await.unwrap();
    check_login(&admin, &r, &marker).await.unwrap();

    let log_path = env("SIGIL_TEST_PG_LOG");
    let log = std::fs::read_to_string(&log_path).unwrap();
    // Proves statement logging is on and this very statement was logged,
    // with a verifier where the password would be.
    let statement = format!(
        "ALTER ROLE \"{}\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$",
        r.as_str()
    );
    assert!(
        log.contains(&statement),
        "{log_path} lacks {statement:?}: is log_statement = 'all' set?"
    );
    assert!(
        !log.contains(MARKER),
        "{log_path} contains the cleartext password"
    );
}

#[tokio::test]
async fn keyword_role_and_quote_laden_password_round_trip() {
    // A keyword as role name works because names are always double-quoted;
    // quotes and backslashes in the password cannot reach the SQL because
    // only the verifier does.
    let admin = admin();
    let r = RoleName::parse("select").unwrap();
    let pw = Secret::from(format!("it's a \\ '' \"pw\" {}", std::process::id()));
    ensure_roles(&admin, &[&r]).await.unwrap();
    set_password(&admin, &r, &pw).await.unwrap();
    check_login(&admin, &r, &pw).await.unwrap();
}

#[tokio::test]
async fn the_admin_role_is_never_managed() {
    let admin = admin();
    let me = RoleName::parse(&admin.user).unwrap();
    let refused = Err(PgError::RoleIsAdmin(me.clone()));
    assert_eq!(ensure_roles(&admin, &[&me]).await, refused);
    assert_eq!(set_password(&admin, &me, &password("admin")).await, refused);
    assert_eq!(lock(&admin, &me).await, refused);
}

#[tokio::test]
async fn empty_password_is_refused() {
    let r = role("empty");
    let r = set_password(&admin(), &r, &Secret::new(Vec::new())).await;
    assert_eq!(r, Err(PgError::EmptyPassword));
}

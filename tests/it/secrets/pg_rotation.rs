//! The `postgres` generator against the real PostgreSQL server: two roles
//! used in turn, so a client that logs in with whatever sigil serves never
//! fails across rotations; the replaced role works through its grace and is
//! locked after; a crash between "stored" and "applied" finishes with the
//! same password.

use super::pg_roles::{admin_fields, can_login};
use super::*;
use sigil::secrets::SecretPath;
use sigil::server::secrets::postgres::RoleName;
use std::time::Duration;
use tonic::Code;

/// Two role names unique to this test process.
fn roles(tag: &str) -> [String; 2] {
    let pid = std::process::id();
    [format!("r_{tag}_{pid}_a"), format!("r_{tag}_{pid}_b")]
}

/// Stores the admin connection at `db/admin` and sets `path` to rotate.
async fn setup(
    c: &mut SecretsClient<sigil::cli::client::Conn>,
    path: &str,
    tag: &str,
    every: i64,
    grace: i64,
) -> [String; 2] {
    let fields = admin_fields();
    let req = pb::PutSecretRequest {
        path: "db/admin".into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.expose().to_vec()))
            .collect(),
        has_cas: false,
        cas: 0,
    };
    c.put(req).await.unwrap();
    let [a, b] = roles(tag);
    c.set_rotation(pb::SetRotationRequest {
        path: path.into(),
        every_seconds: every,
        window_seconds: 0,
        grace_seconds: grace,
        generator: format!("postgres:connection=db/admin,roles={a}+{b}"),
    })
    .await
    .unwrap();
    [a, b]
}

/// Logs in with a served version's fields and runs a query.
async fn login(v: &pb::SecretVersion) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(field(v, "host"))
        .port(field(v, "port").parse().unwrap())
        .user(field(v, "username"))
        .password(field(v, "password"))
        .dbname(field(v, "dbname"))
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    let task = tokio::spawn(conn);
    client.simple_query("SELECT 1").await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

async fn wait_version(
    c: &SecretsClient<sigil::cli::client::Conn>,
    path: &str,
    version: u64,
    secs: u64,
) -> pb::SecretVersion {
    eventually(secs, || {
        let mut c = c.clone();
        let path = path.to_owned();
        async move {
            c.get(get(&path, 0))
                .await
                .ok()
                .map(tonic::Response::into_inner)
                .filter(|v| v.version >= version)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logging_in_every_50ms_never_fails_across_ten_rotations() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    // Grace long enough that a login slowed by a loaded machine still
    // lands within it.
    let [a, b] = setup(&mut c, "db/app", "loop", 3, 2).await;
    let first = wait_version(&c, "db/app", 1, 15).await;
    let mut logins = 0u32;
    let mut users = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v = c.get(get("db/app", 0)).await.unwrap().into_inner();
        if let Err(e) = login(&v).await {
            panic!(
                "login as {} (version {}) failed: {e}",
                field(&v, "username"),
                v.version
            );
        }
        logins += 1;
        users.insert(field(&v, "username"));
        if v.version >= first.version + 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ten rotations within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logins > 100, "{logins} logins");
    assert_eq!(
        users,
        [a, b].into_iter().collect(),
        "both roles served in turn"
    );
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_role_works_during_grace_and_is_locked_after() {
    let h = Harness::start(serde_json::json!({})).await;
    let mut c = h.admin().await;
    let [a, b] = setup(&mut c, "db/grace", "grace", 3600, 3).await;
    let v1 = wait_version(&c, "db/grace", 1, 15).await;
    assert_eq!(field(&v1, "username"), a);
    login(&v1).await.unwrap();
    // Deleting a version does not keep its role from being locked later:
    // the role to lock is recorded when the version is replaced.
    let v2 = c
        .rotate(pb::SecretPathRequest {
            path: "db/grace".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.version, 2);
    let v2 = c.get(get("db/grace", 0)).await.unwrap().into_inner();
    assert_eq!(field(&v2, "username"), b);
    login(&v2).await.unwrap();
    // During grace the replaced credential still logs in, and rotating
    // again now is refused: it would change that role's password.
    let old = c.get(get("db/grace", 1)).await.unwrap().into_inner();
    assert!(old.previous);
    login(&old).await.unwrap();
    let e = c
        .rotate(pb::SecretPathRequest {
            path: "db/grace".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("in its grace period until"),
        "{}",
        e.message()
    );
    login(&old).await.unwrap();
    c.delete(versions("db/grace", &[1])).await.unwrap();
    // After grace: the version is retired and the role locked.
    let role_a = RoleName::parse(&a).unwrap();
    eventually(15, || {
        let role_a = role_a.clone();
        async move { (can_login(&role_a).await == Some(false)).then_some(()) }
    })
    .await;
    let shown = c
        .show_rotation(pb::SecretPathRequest {
            path: "db/grace".into(),
        })
        .await
        .unwrap();
    assert!(shown.into_inner().retiring.is_empty());
    let err = login(&old).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );
    assert_eq!(can_login(&RoleName::parse(&a).unwrap()).await, Some(false));
    assert_eq!(can_login(&RoleName::parse(&b).unwrap()).await, Some(true));
    login(&v2).await.unwrap();
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_stored_and_applied_finishes_with_the_same_password() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.policy_dir = policy_with(tmp.path(), &serde_json::json!({}));
    let s = TestServer::initialized_with_config(cfg.clone()).await;
    let mut c = s.clients().await.secrets;
    let [_, b] = setup(&mut c, "db/crash", "crash", 3600, 60).await;
    let v1 = wait_version(&c, "db/crash", 1, 15).await;
    s.stop().await;
    // The rotation stores its new value and stops there, as a crash right
    // after that write would: the server is opened without serving, so no
    // rotation task runs to finish it.
    let offline = sigil::server::Server::open(cfg.clone()).await.unwrap();
    offline
        .clone()
        .unseal(sigil::secret::Secret::from(PASSPHRASE.to_string()))
        .await
        .unwrap();
    let path = SecretPath::parse("db/crash").unwrap();
    let now = sigil::clock::unix_seconds(sigil::clock::now());
    let pending = offline.secrets().begin_rotation(&path, now).await.unwrap();
    let pending_user =
        String::from_utf8(pending.get("username").unwrap().expose().to_vec()).unwrap();
    let pending_pw = pending.get("password").unwrap().expose().to_vec();
    assert_eq!(pending_user, b);
    assert!(
        offline
            .secrets()
            .rotation(&path)
            .await
            .unwrap()
            .pending
            .is_some()
    );
    drop(offline);
    // Not applied: the database does not know the new password yet.
    let mut unapplied = v1.clone();
    unapplied
        .fields
        .insert("username".into(), b.clone().into_bytes());
    unapplied
        .fields
        .insert("password".into(), pending_pw.clone());
    assert!(login(&unapplied).await.is_err());

    // On restart the task finishes the begun rotation with the stored value.
    let s = TestServer::start_with(cfg).await;
    unseal(&mut s.clients().await).await;
    let c = s.clients().await.secrets;
    let v2 = wait_version(&c, "db/crash", 2, 15).await;
    assert_eq!(v2.version, 2);
    assert_eq!(field(&v2, "username"), b);
    assert_eq!(
        v2.fields.get("password").unwrap(),
        &pending_pw,
        "the same password"
    );
    login(&v2).await.unwrap();
    login(&v1).await.unwrap();
    let mut c = c.clone();
    let shown = c
        .show_rotation(pb::SecretPathRequest {
            path: "db/crash".into(),
        })
        .await
        .unwrap();
    let shown = shown.into_inner();
    assert!(!shown.pending && shown.failures == 0, "{shown:?}");
    s.stop().await;
}

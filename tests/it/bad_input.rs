//! Each class of bad input gets its specific status code and a message that
//! names what was wrong, and nothing is stored.

use crate::common::*;
use sigil::api::pb;
use tonic::Code;

async fn refused(c: &mut sigil::cli::client::Clients, e: pb::Entry, code: Code, words: &str) {
    let s = c
        .entries
        .create(pb::CreateEntryRequest { entry: Some(e) })
        .await
        .unwrap_err();
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(words),
        "expected {words:?} in {:?}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let inv = Code::InvalidArgument;

    let mut e = entry("/web", 1);
    e.spiffe_id = format!("spiffe://{TD}/a//b");
    refused(&mut c, e, inv, "spiffe_id: path has an empty segment").await;
    let mut e = entry("/web", 1);
    e.spiffe_id = "spiffe://Example.org/web".into();
    refused(&mut c, e, inv, "trust domain may only contain lowercase").await;
    let mut e = entry("/web", 1);
    e.spiffe_id = "http://example.org/web".into();
    refused(&mut c, e, inv, "must start with \"spiffe://\"").await;
    let mut e = entry("/web", 1);
    e.spiffe_id = format!("spiffe://{TD}/{}", "a".repeat(3000));
    refused(&mut c, e, inv, "longer than 2048 bytes").await;
    let mut e = entry("/web", 1);
    e.spiffe_id = "spiffe://other.org/web".into();
    refused(&mut c, e, inv, "is not in trust domain example.org").await;
    let mut e = entry("/web", 1);
    e.selectors = vec!["k8s:ns:default".into()];
    refused(&mut c, e, inv, "unknown selector type \"k8s\"").await;
    let mut e = entry("/web", 1);
    e.selectors = vec!["unix:uid:abc".into()];
    refused(&mut c, e, inv, "needs a decimal number").await;
    let mut e = entry("/web", 1);
    e.selectors = vec![];
    refused(&mut c, e, inv, "at least one selector").await;
    let mut e = entry("/web", 1);
    e.x509_ttl_seconds = -60;
    refused(&mut c, e, inv, "x509_ttl: duration must be positive").await;
    let mut e = entry("/web", 1);
    e.jwt_ttl_seconds = -1;
    refused(&mut c, e, inv, "jwt_ttl: duration must be positive").await;
    let mut e = entry("/web", 1);
    e.hint = "h".repeat(1000);
    refused(&mut c, e, inv, "hint must be at most 256 bytes").await;
    let mut e = entry("/web", 1);
    e.selectors = vec![format!("unix:user:{}", "u".repeat(5000))];
    refused(&mut c, e, inv, "longer than 1024 bytes").await;
    let mut e = entry("/web", 1);
    e.selectors = (0..100).map(|i| format!("unix:uid:{i}")).collect();
    refused(&mut c, e, inv, "too many selectors").await;
    let mut e = entry("/web", 1);
    e.dns_names = vec!["bad_name.example".into()];
    refused(&mut c, e, inv, "dns_names").await;
    let mut e = entry("/sigil/server", 1);
    e.admin = true;
    refused(&mut c, e, inv, "reserved").await;

    let listed = list_entries(&mut c).await;
    assert!(listed.entries.is_empty(), "{listed:?}");

    // A duplicate (same SPIFFE ID, parent and selectors) is AlreadyExists.
    c.entries
        .create(pb::CreateEntryRequest {
            entry: Some(entry("/web", 1)),
        })
        .await
        .unwrap();
    refused(
        &mut c,
        entry("/web", 1),
        Code::AlreadyExists,
        "same SPIFFE ID, parent ID and selectors",
    )
    .await;
    let listed = list_entries(&mut c).await;
    assert_eq!(listed.entries.len(), 1);

    // Unknown and malformed entry IDs.
    let e = c
        .entries
        .show(pb::ShowEntryRequest { id: "0".repeat(32) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .entries
        .show(pb::ShowEntryRequest {
            id: "../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .entries
        .create(pb::CreateEntryRequest { entry: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_issuance_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let id = format!("spiffe://{TD}/workload");

    let garbage = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            csr: b"not a csr".to_vec(),
            spiffe_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    assert!(
        garbage.message().to_lowercase().contains("csr"),
        "{}",
        garbage.message()
    );

    let big = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            csr: vec![0; 100_000],
            spiffe_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(big.code(), Code::InvalidArgument);
    assert!(
        big.message().contains("larger than 16 KiB"),
        "{}",
        big.message()
    );

    let (_, csr) =
        sigil::authority::generate_key_and_csr(&sigil::id::SpiffeId::parse(&id).unwrap()).unwrap();
    let neg = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            csr: csr.clone(),
            spiffe_id: id.clone(),
            ttl_seconds: -5,
            dns_names: vec![],
            entry_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(neg.code(), Code::InvalidArgument);
    assert!(
        neg.message().contains("ttl: duration must be positive"),
        "{}",
        neg.message()
    );

    let bad_id = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            csr: csr.clone(),
            spiffe_id: "spiffe://example.org/a/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(
        bad_id.message().contains("path may not end with '/'"),
        "{}",
        bad_id.message()
    );

    let other_td = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            entry_id: String::new(),
            csr,
            spiffe_id: "spiffe://other.org/a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other_td.code(), Code::InvalidArgument, "{other_td:?}");

    let no_aud = c
        .node
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            entry_id: String::new(),
            spiffe_id: id.clone(),
            audience: vec![],
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(no_aud.code(), Code::InvalidArgument, "{no_aud:?}");
    assert!(
        no_aud.message().contains("audience"),
        "{}",
        no_aud.message()
    );

    let zero_neg = c
        .node
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            entry_id: String::new(),
            spiffe_id: id,
            audience: vec!["a".into()],
            ttl_seconds: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(zero_neg.code(), Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_ttl_on_the_command_line_is_refused() {
    let out = sigil(
        &[
            "svid",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/w",
            "--ttl",
            "0s",
            "--out",
            "/tmp/x",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duration must be positive"), "{err}");
    let out = sigil(
        &[
            "entry",
            "create",
            "--spiffe-id",
            "x",
            "--parent-id",
            "y",
            "--selector",
            "unix:uid:1",
            "--x509-ttl",
            "-5m",
        ],
        &[],
    );
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_identities_cannot_be_minted_and_audit_records_stay_small() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    for id in [
        "spiffe://example.org/sigil/server",
        "spiffe://example.org/sigil/agent/x",
    ] {
        let (_, csr) =
            sigil::authority::generate_key_and_csr(&sigil::id::SpiffeId::parse(id).unwrap())
                .unwrap();
        let e = c
            .node
            .sign_x509_svid(pb::SignX509SvidRequest {
                entry_id: String::new(),
                csr,
                spiffe_id: id.into(),
                ttl_seconds: 0,
                dns_names: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("reserved for sigil's own components"),
            "{}",
            e.message()
        );
    }
    // A huge id in a request is cut before it reaches the audit log.
    let huge = "a".repeat(100_000);
    let e = c
        .entries
        .show(pb::ShowEntryRequest { id: huge })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let tail = c
        .audit
        .tail(pb::TailAuditRequest { count: 3 })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        tail.iter().all(|r| r.len() < 2_000),
        "audit records stay small"
    );
    assert!(tail.iter().any(|r| r.contains("(truncated)")), "{tail:?}");
    drop(c);
    s.stop().await;
}

/// The status of a create for `e`, which must fail.
async fn create_err(c: &mut sigil::cli::client::Clients, e: pb::Entry) -> tonic::Status {
    c.entries
        .create(pb::CreateEntryRequest { entry: Some(e) })
        .await
        .unwrap_err()
}

const NO_PATH: &str = "SPIFFE ID has no path: it names the trust domain itself, not a workload";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_entry_or_svid_for_the_trust_domain_id_or_a_bad_dns_name() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let td_id = format!("spiffe://{TD}");

    let mut e = entry("/web", 1);
    e.spiffe_id = td_id.clone();
    let st = create_err(&mut c, e).await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(st.message(), format!("spiffe_id: {NO_PATH}"));
    for (dns, message) in [
        (
            "*",
            "dns_names: wildcard \"*\" is too broad: '*' must be followed by at least two labels, as in *.example.org",
        ),
        (
            "1.2.3.4",
            "dns_names: \"1.2.3.4\" is an IP address; IP addresses are not DNS names",
        ),
        (
            "::1",
            "dns_names: \"::1\" is an IP address; IP addresses are not DNS names",
        ),
    ] {
        let mut e = entry("/web", 1);
        e.dns_names = vec![dns.into()];
        let st = create_err(&mut c, e).await;
        assert_eq!(st.code(), Code::InvalidArgument, "{dns}");
        assert_eq!(st.message(), message);
    }
    assert!(list_entries(&mut c).await.entries.is_empty());

    // Minting refuses the same ID and names; nothing is signed.
    let (_, csr) = sigil::authority::generate_key_and_csr(
        &sigil::id::SpiffeId::parse(&format!("spiffe://{TD}/w")).unwrap(),
    )
    .unwrap();
    let st = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            csr: csr.clone(),
            spiffe_id: td_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(st.message(), format!("spiffe_id: {NO_PATH}"));
    let st = c
        .node
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            spiffe_id: td_id,
            audience: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(st.message(), format!("spiffe_id: {NO_PATH}"));
    let st = c
        .node
        .sign_x509_svid(pb::SignX509SvidRequest {
            csr,
            spiffe_id: format!("spiffe://{TD}/w"),
            dns_names: vec!["10.0.0.1".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(
        st.message(),
        "dns_names: \"10.0.0.1\" is an IP address; IP addresses are not DNS names"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_identity_and_dns_refusals_with_the_servers_words() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let admin = s.admin.to_str().unwrap();
    let env = [("SIGIL_ADMIN_SOCKET", admin)];
    let parent = format!("spiffe://{TD}/sigil/agent/node1");
    let out_dir = tmp.path().join("svid");
    let out_dir = out_dir.to_str().unwrap();
    let td_id = format!("spiffe://{TD}");
    let web = format!("spiffe://{TD}/web");
    let no_path = format!("error: invalid argument: spiffe_id: {NO_PATH}\n");
    let create = |id: &str, dns: &str| {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &parent,
            "--selector",
            "unix:uid:1",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        if !dns.is_empty() {
            args.extend(["--dns".to_owned(), dns.to_owned()]);
        }
        args
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (create(&td_id, ""), no_path.clone()),
        (
            create(&web, "*"),
            "error: invalid argument: dns_names: wildcard \"*\" is too broad: '*' must be followed by at least two labels, as in *.example.org\n".into(),
        ),
        (
            create(&web, "1.2.3.4"),
            "error: invalid argument: dns_names: \"1.2.3.4\" is an IP address; IP addresses are not DNS names\n".into(),
        ),
        (
            ["svid", "mint", "--spiffe-id", &td_id, "--out", out_dir]
                .map(str::to_owned)
                .to_vec(),
            no_path.clone(),
        ),
        (
            ["svid", "mint", "--spiffe-id", &web, "--dns", "1.2.3.4", "--out", out_dir]
                .map(str::to_owned)
                .to_vec(),
            "error: invalid argument: dns_names: \"1.2.3.4\" is an IP address; IP addresses are not DNS names\n".into(),
        ),
        (
            ["jwt", "mint", "--spiffe-id", &td_id, "--audience", "a"]
                .map(str::to_owned)
                .to_vec(),
            no_path,
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sigil(&args, &env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want, "{args:?}");
    }
    // Too many audiences are named before anything is sent.
    let mut args = vec!["jwt", "mint", "--spiffe-id", &web];
    for _ in 0..9 {
        args.extend(["--audience", "a"]);
    }
    let out = sigil(&args, &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --audience: 9 audiences given; at most 8 are allowed\n"
    );
    assert!(!std::path::Path::new(out_dir).join("svid.pem").exists());
    let mut c = s.clients().await;
    assert!(list_entries(&mut c).await.entries.is_empty());
    s.stop().await;
}

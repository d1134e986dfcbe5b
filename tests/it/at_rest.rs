//! Data at rest: a marker value written through the API and the CA's
//! private key never appear in plaintext in any file under the data
//! directory.

use crate::common::*;
use base64::Engine;
use sigil::api::pb;

const MARKER: &str = "MARKER-7f3a9c0d-plaintext-at-rest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_and_ca_key_never_reach_the_disk_in_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::initialized(tmp.path()).await;
    let mut c = s.clients().await;
    let mut e = entry("/marked", 42);
    e.hint = MARKER.into();
    e.selectors.push(format!("unix:user:{MARKER}"));
    let created = c
        .entries
        .create(pb::CreateEntryRequest { entry: Some(e) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.hint, MARKER);

    // The CA key as the authority holds it.
    let sealed = s.server.authority().unwrap().to_sealed_bytes();
    let json: serde_json::Value = serde_json::from_slice(sealed.expose()).unwrap();
    let b64 = json["ca_keys"][0]["pkcs8"].as_str().unwrap().to_owned();
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let at = pkcs8
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .expect("private scalar in PKCS#8");
    let scalar = pkcs8[at + 2..at + 34].to_vec();
    let jwt_b64 = json["jwt_keys"][0]["pkcs8"].as_str().unwrap().to_owned();

    drop(c);
    s.stop().await;

    let files = all_file_bytes(tmp.path());
    assert!(
        files.iter().any(|(p, _)| p.ends_with("audit.log")),
        "scanned the audit log too"
    );
    for (path, bytes) in &files {
        for (what, needle) in [
            ("marker", MARKER.as_bytes()),
            ("CA key (PKCS#8)", &pkcs8[..]),
            ("CA key (base64)", b64.as_bytes()),
            ("CA private scalar", &scalar[..]),
            ("JWT key (base64)", jwt_b64.as_bytes()),
        ] {
            assert!(
                !contains(bytes, needle),
                "{what} found in plaintext in {}",
                path.display()
            );
        }
    }
}

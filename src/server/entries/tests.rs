//! The entry registry over a real sealed store: the cache follows every
//! write, also after a panic poisoned its lock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use crate::server::testing::{PausingStore, at, td, unsealed_store};

struct Fixture {
    _dir: tempfile::TempDir,
    _raw: Arc<PausingStore>,
    entries: Arc<Entries>,
}

fn fixture() -> Fixture {
    let (dir, raw, sealed) = unsealed_store();
    Fixture {
        _dir: dir,
        _raw: raw,
        entries: Arc::new(Entries::new(sealed, td())),
    }
}

fn draft(path: &str) -> EntryDraft {
    EntryDraft {
        spiffe_id: format!("spiffe://example.org{path}"),
        parent_id: "spiffe://example.org/sigil/agent/n1".into(),
        selectors: vec!["unix:uid:1000".into()],
        ..EntryDraft::default()
    }
}

/// Panics on another thread while holding the cache's write lock.
fn poison_cache(entries: &Arc<Entries>) {
    let held = entries.clone();
    let joined = std::thread::spawn(move || {
        let _guard = held.cache.write().unwrap();
        panic!("a holder of the cache lock fails");
    })
    .join();
    assert!(joined.is_err());
    assert!(entries.cache.is_poisoned());
}

#[tokio::test]
async fn a_poisoned_cache_still_follows_every_write() {
    let f = fixture();
    let kept = f.entries.create(&draft("/kept"), at(1_000)).await.unwrap();
    poison_cache(&f.entries);

    // Writes acknowledged after the panic reach the cache, not just the store.
    let created = f.entries.create(&draft("/web"), at(1_001)).await.unwrap();
    assert_eq!(f.entries.get(&created.id).unwrap(), created);
    let mut changed = draft("/web");
    changed.hint = "changed".into();
    let updated = f
        .entries
        .update(&created.id, &changed, created.revision)
        .await
        .unwrap();
    assert_eq!(f.entries.get(&created.id).unwrap().hint, "changed");
    assert_eq!(updated.revision, 2);
    f.entries.delete(&kept.id).await.unwrap();
    assert_eq!(f.entries.list(), vec![updated.clone()]);
    assert!(f.entries.get(&kept.id).is_err());

    // What the cache holds is what a restarted server loads.
    let reloaded = Entries::new(f.entries.store.clone(), td());
    assert_eq!(reloaded.load().unwrap(), 1);
    assert_eq!(reloaded.list(), vec![updated]);
}

#[tokio::test]
async fn refusals_name_the_rule_they_break() {
    let f = fixture();
    let web = f.entries.create(&draft("/web"), at(1_000)).await.unwrap();

    let dup = f.entries.create(&draft("/web"), at(1_001)).await;
    assert!(
        matches!(&dup, Err(EntriesError::EntryExists { holder: Some(h) }) if h == &web.id),
        "{dup:?}"
    );
    let db = f.entries.create(&draft("/db"), at(1_002)).await.unwrap();
    let onto_web = f.entries.update(&db.id, &draft("/web"), 0).await;
    assert!(
        matches!(onto_web, Err(EntriesError::EntryExists { holder: None })),
        "{onto_web:?}"
    );

    let stale = f.entries.update(&web.id, &draft("/web2"), 7).await;
    assert!(
        matches!(&stale, Err(EntriesError::RevisionConflict { id, current: 1, expected: 7 }) if id == &web.id),
        "{stale:?}"
    );
    let invalid = f.entries.create(&draft("/"), at(1_003)).await;
    assert!(
        matches!(invalid, Err(EntriesError::Invalid(_))),
        "{invalid:?}"
    );

    f.entries.delete(&web.id).await.unwrap();
    let gone = f.entries.delete(&web.id).await;
    assert!(
        matches!(&gone, Err(EntriesError::EntryNotFound(id)) if id == &web.id),
        "{gone:?}"
    );
    assert!(matches!(
        f.entries.get(&web.id),
        Err(EntriesError::EntryNotFound(_))
    ));
}

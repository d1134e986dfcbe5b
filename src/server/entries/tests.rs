//! The entry registry over a real sealed store: writes run off the async
//! workers, the cache follows every write in order (also when a caller
//! leaves mid-write, and after a panic poisoned its lock).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use super::*;
use crate::server::testing::{PausingStore, WAIT, assert_off, at, td, unsealed_store};
use crate::store::Table;

struct Fixture {
    _dir: tempfile::TempDir,
    raw: Arc<PausingStore>,
    entries: Arc<Entries>,
}

fn fixture() -> Fixture {
    let (dir, raw, sealed) = unsealed_store();
    Fixture {
        _dir: dir,
        raw,
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
        let _guard = held.shared.cache.write().unwrap();
        panic!("a holder of the cache lock fails");
    })
    .join();
    assert!(joined.is_err());
    assert!(entries.shared.cache.is_poisoned());
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
    let reloaded = Entries::new(f.entries.shared.store.clone(), td());
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

#[tokio::test]
async fn writes_run_off_the_async_worker() {
    // A current-thread runtime: its only worker is this thread.
    let f = fixture();
    let worker = std::thread::current().id();
    let web = f.entries.create(&draft("/web"), at(1_000)).await.unwrap();
    assert_off(&f.raw, worker, "create");
    f.entries.update(&web.id, &draft("/web2"), 1).await.unwrap();
    assert_off(&f.raw, worker, "update");
    f.entries.delete(&web.id).await.unwrap();
    assert_off(&f.raw, worker, "delete");
}

fn hinted(hint: &str) -> EntryDraft {
    EntryDraft {
        hint: hint.into(),
        ..draft("/web")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_left_still_comes_before_the_next() {
    let f = fixture();
    let web = f.entries.create(&draft("/web"), at(1_000)).await.unwrap();

    // The first update's store write is held; then its caller goes away.
    let (reached, resume) = f.raw.arm(Table::ENTRIES);
    let first = tokio::spawn({
        let (entries, id) = (f.entries.clone(), web.id.clone());
        async move { entries.update(&id, &hinted("first"), 1).await }
    });
    tokio::task::spawn_blocking(move || reached.recv_timeout(WAIT))
        .await
        .unwrap()
        .unwrap();
    first.abort();

    // The next writer expects the first one's revision: it must run after
    // the abandoned write has reached the store and the cache.
    let second = tokio::spawn({
        let (entries, id) = (f.entries.clone(), web.id.clone());
        async move { entries.update(&id, &hinted("second"), 2).await }
    });
    resume.send(()).unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!((second.revision, second.hint.as_str()), (3, "second"));
    assert_eq!(f.entries.list(), vec![second.clone()]);
    let reloaded = Entries::new(f.entries.shared.store.clone(), td());
    reloaded.load().unwrap();
    assert_eq!(reloaded.list(), vec![second]);
}

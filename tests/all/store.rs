//! Object stores: one conformance suite for every backend, verified fetches,
//! tampering, a store that goes down and comes back, and compiled artifacts.

use burncache::{BurnCache, Config, Digest, ErrorKind, Published, Store};
use object_store::ObjectStoreExt;
use serde_json::json;

use crate::s3::S3Server;
use crate::{cache_with, guests, json, no_limits, read, value};

/// What every store must do.
async fn conformance(store: Store) {
    let bytes = read(guests::ADD_ONE);
    let digest = Digest::of(&bytes);
    let other = Digest::of(b"never published");

    assert_eq!(
        store
            .fetch(&digest, 64 << 20)
            .await
            .expect_err("empty")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(store.publish(&digest, &bytes).await, Ok(Published::Created));
    assert_eq!(
        store.publish(&digest, &bytes).await,
        Ok(Published::AlreadyExisted),
        "idempotent"
    );
    assert_eq!(store.fetch(&digest, 64 << 20).await.expect("fetch"), bytes);
    assert_eq!(
        store
            .fetch(&other, 64 << 20)
            .await
            .expect_err("unknown")
            .kind(),
        ErrorKind::NotFound
    );

    let words = read(guests::WORD_COUNT);
    let words_digest = Digest::of(&words);
    store.publish(&words_digest, &words).await.expect("publish");
    let mut expected = vec![
        (digest, bytes.len() as u64),
        (words_digest, words.len() as u64),
    ];
    expected.sort();
    assert_eq!(store.list().await.expect("list"), expected);
    assert!(
        store
            .key(&digest, burncache::SourceKind::Component)
            .ends_with(&format!("sha256/{digest}.wasm"))
    );
}

#[tokio::test]
async fn memory_store_conformance() {
    conformance(Store::from_url("memory://conformance").expect("memory")).await;
}

#[tokio::test]
async fn file_store_conformance() {
    let dir = crate::tempdir();
    conformance(Store::from_url(&burncache::file_url(&dir.join("store"))).expect("file")).await;
}

#[tokio::test]
async fn s3_store_conformance() {
    conformance(S3Server::shared().store("conformance")).await;
}

#[test]
fn bad_store_urls_are_refused() {
    for url in ["ftp://host/x", "s3://", "file://relative/path", "no-scheme"] {
        let err = Store::from_url(url).expect_err(url);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}: {err}");
    }
}

fn node(store: Store) -> BurnCache {
    cache_with(Config {
        store: Some(store),
        ..Config::default()
    })
}

#[tokio::test]
async fn a_node_fetches_what_another_registered() {
    let store = S3Server::shared().store("share");
    let a = node(store.clone());
    let digest = a.register(&read(guests::ADD_ONE)).await.expect("register");
    a.settle().await;
    assert_eq!(a.stats().publishes, 1);

    let b = node(store);
    let out = b
        .execute(&digest, json(json!({"n": 1})), &no_limits())
        .await
        .expect("fetched and run");
    assert_eq!(value(&out), json!({"n": 2}));
    assert_eq!((b.stats().fetches, b.stats().compiles), (1, 1));
}

#[tokio::test]
async fn racing_fetches_share_one() {
    let store = Store::from_url("memory://racing-fetches").expect("memory");
    let bytes = read(guests::ADD_ONE);
    let digest = Digest::of(&bytes);
    store.publish(&digest, &bytes).await.expect("publish");
    let node = node(store);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.register_by_hash(&digest).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("join"), Ok(digest));
    }
    assert_eq!((node.stats().fetches, node.stats().compiles), (1, 1));
}

#[tokio::test]
async fn tampered_objects_are_refused_and_nothing_is_cached() {
    let server = S3Server::shared();
    let store = server.store("tamper");
    let bytes = read(guests::ADD_ONE);
    let digest = Digest::of(&bytes);
    store.publish(&digest, &bytes).await.expect("publish");

    // Someone with write access to the bucket replaces the object.
    let raw = raw_s3(server);
    let key = object_store::path::Path::from(store.key(&digest, burncache::SourceKind::Component));
    raw.put(&key, read(guests::WORD_COUNT).into())
        .await
        .expect("overwrite");

    let node = node(store);
    let err = node.register_by_hash(&digest).await.expect_err("tampered");
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(
        err.to_string().contains(&format!("sha256/{digest}.wasm")),
        "names the key: {err}"
    );
    assert!(node.digests().is_empty(), "nothing cached");
    assert_eq!(node.stats().compiles, 0, "nothing compiled");
    assert!(
        raw.head(&key).await.is_ok(),
        "the object is left for the operator"
    );
}

pub(crate) fn raw_s3(server: &S3Server) -> object_store::aws::AmazonS3 {
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(crate::s3::BUCKET);
    for (key, value) in server.options() {
        builder = builder.with_config(key.parse().expect("a key"), value);
    }
    builder.build().expect("a raw S3 client")
}

#[tokio::test]
async fn a_store_that_goes_down_and_comes_back() {
    let mut server = S3Server::start(None);
    let store = server.store("down");
    let node = node(store.clone());
    let held = node
        .register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    node.settle().await;

    let words = read(guests::WORD_COUNT);
    let missing = Digest::of(&words);
    server.stop();

    // What the node holds keeps working.
    let out = node
        .execute(&held, json(json!({"n": 1})), &no_limits())
        .await
        .expect("held");
    assert_eq!(value(&out), json!({"n": 2}));
    // What it would have to fetch fails as a backend error naming the store.
    let err = node
        .register_by_hash(&missing)
        .await
        .expect_err("store is down");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains(store.url()), "{err}");
    // Registering still works; the publish failure is counted, not raised.
    node.register(&words).await.expect("register while down");
    node.settle().await;
    assert_eq!(node.stats().publish_failures, 1);
    node.forget(&missing);

    server.restart();
    store.publish(&missing, &words).await.expect("deploy again");
    assert_eq!(
        node.register_by_hash(&missing).await,
        Ok(missing),
        "same node, store back"
    );
}

#[tokio::test]
async fn compiled_artifacts_survive_a_restart() {
    let dir = crate::tempdir().join("artifacts");
    let config = || Config {
        artifact_dir: Some(dir.clone()),
        ..Config::default()
    };
    let bytes = read(guests::ADD_ONE);

    let first = cache_with(config());
    first.register(&bytes).await.expect("register");
    assert_eq!(
        (first.stats().compiles, first.stats().artifact_loads),
        (1, 0)
    );
    let stats = burncache::artifact_stats(&dir).expect("stats");
    assert_eq!((stats.files, stats.engines), (1, 1));

    let second = cache_with(config());
    let digest = second.register(&bytes).await.expect("register");
    assert_eq!(
        (second.stats().compiles, second.stats().artifact_loads),
        (0, 1)
    );
    let out = second
        .execute(&digest, json(json!({"n": 1})), &no_limits())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({"n": 2}));
}

#[tokio::test]
async fn a_corrupted_artifact_is_discarded_and_recompiled() {
    let dir = crate::tempdir().join("artifacts");
    let config = || Config {
        artifact_dir: Some(dir.clone()),
        ..Config::default()
    };
    let bytes = read(guests::ADD_ONE);
    cache_with(config())
        .register(&bytes)
        .await
        .expect("register");
    let file = artifact_files(&dir).pop().expect("one artifact");

    for damage in [Damage::Truncate, Damage::FlipByte, Damage::Garbage] {
        damage.apply(&file);
        let node = cache_with(config());
        let digest = node.register(&bytes).await.expect("recompiled");
        assert_eq!(
            (node.stats().compiles, node.stats().artifact_loads),
            (1, 0),
            "{damage:?}"
        );
        node.execute(&digest, json(json!({"n": 1})), &no_limits())
            .await
            .expect("runs");
        assert_eq!(artifact_files(&dir), vec![file.clone()], "rewritten");
    }
    assert!(burncache::clear_artifacts(&dir).expect("clear").files == 1);
    assert_eq!(burncache::artifact_stats(&dir).expect("stats").files, 0);
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate,
    FlipByte,
    Garbage,
}

impl Damage {
    fn apply(self, file: &std::path::Path) {
        let mut bytes = std::fs::read(file).expect("read");
        match self {
            Damage::Truncate => bytes.truncate(bytes.len() / 2),
            Damage::FlipByte => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
            }
            Damage::Garbage => bytes = b"not an artifact".to_vec(),
        }
        std::fs::write(file, bytes).expect("write");
    }
}

pub(crate) fn artifact_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for engine in std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|entry| entry.path().is_dir())
    {
        for file in std::fs::read_dir(engine.path())
            .expect("engine dir")
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "cwasm") {
                files.push(file.path());
            }
        }
    }
    files
}

#[tokio::test]
async fn fetching_and_compiling_do_not_count_against_the_deadline() {
    let store = Store::from_url("memory://deadline-starts-late").expect("memory");
    let bytes = read(guests::ADVERSARY);
    let digest = Digest::of(&bytes);
    store.publish(&digest, &bytes).await.expect("publish");
    // Compiling this component takes longer than the whole deadline; a few
    // milliseconds of guest work fit in it once the deadline starts where it should:
    // when the component is ready to run.
    let limits = burncache::Limits {
        timeout: Some(std::time::Duration::from_millis(80)),
        ..burncache::Limits::default()
    };
    let node = node(store);
    let work = json(json!({"op": "spin", "n": 1_000_000}));
    let outcome = node.execute_metered(&digest, work, &limits).await;
    assert_eq!(value(&outcome.result.expect("ran"))["spun"], 1_000_000);
}

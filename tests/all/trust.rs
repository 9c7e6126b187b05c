//! What a node keeps, as a hostile local user or a hostile store object would try
//! it: artifacts planted, copied, swapped by symlink or put in a directory others
//! can write; oversized objects; unknown digests asked for again and again; and
//! the bounds on what is held.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use burncache::{BurnCache, Config, Digest, ErrorKind, Store};
use object_store::ObjectStoreExt;
use serde_json::json;

use crate::s3::S3Server;
use crate::store::{artifact_files, raw_s3};
use crate::{cache_with, guests, json, no_limits, read, tempdir, value};

fn with_artifacts(dir: &Path) -> Config {
    Config {
        artifact_dir: Some(dir.to_path_buf()),
        ..Config::default()
    }
}

/// The artifact file a node saved for `digest` under `dir`.
fn artifact_of(dir: &Path, digest: &Digest) -> PathBuf {
    artifact_files(dir)
        .into_iter()
        .find(|file| {
            file.file_name()
                .is_some_and(|n| n == format!("{digest}.cwasm").as_str())
        })
        .expect("an artifact for the digest")
}

/// Calls add-one and checks the answer is add-one's.
async fn adds_one(node: &BurnCache, digest: &Digest) {
    let out = node
        .execute(digest, json(json!({"n": 1})), &no_limits())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({"n": 2}), "add-one's own code ran");
}

/// `cp B.cwasm A.cwasm` in the node's own directory: the MAC binds each file to its
/// digest, so A's calls never run B's code.
#[tokio::test]
async fn an_artifact_copied_under_another_digest_is_refused() {
    let dir = tempdir().join("artifacts");
    let first = cache_with(with_artifacts(&dir));
    let add_one = first
        .register(&read(guests::ADD_ONE))
        .await
        .expect("add-one");
    let word_count = first
        .register(&read(guests::WORD_COUNT))
        .await
        .expect("word-count");
    std::fs::copy(artifact_of(&dir, &word_count), artifact_of(&dir, &add_one)).expect("copy");

    let second = cache_with(with_artifacts(&dir));
    second
        .register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    let stats = second.stats();
    assert_eq!(
        (
            stats.artifact_rejections,
            stats.compiles,
            stats.artifact_loads
        ),
        (1, 1, 0)
    );
    adds_one(&second, &add_one).await;
}

/// A sound artifact for the very same digest, made under another key (another
/// node's, an attacker's), planted under this node's name fails the MAC: only the
/// key, not the contents, makes a file this node's.
#[tokio::test]
async fn an_artifact_planted_without_the_key_is_refused() {
    let ours = tempdir().join("artifacts");
    let theirs = tempdir().join("artifacts");
    let add_one = cache_with(with_artifacts(&ours))
        .register(&read(guests::ADD_ONE))
        .await
        .expect("add-one");
    cache_with(with_artifacts(&theirs))
        .register(&read(guests::ADD_ONE))
        .await
        .expect("add-one elsewhere");
    let planted = std::fs::read(artifact_of(&theirs, &add_one)).expect("read");
    std::fs::write(artifact_of(&ours, &add_one), planted).expect("plant");

    let node = cache_with(with_artifacts(&ours));
    node.register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    assert_eq!(
        (node.stats().artifact_rejections, node.stats().compiles),
        (1, 1)
    );
    adds_one(&node, &add_one).await;
}

/// An artifact name that is a symbolic link is refused, not followed, even to a
/// sound artifact of the same digest.
#[tokio::test]
async fn a_symlinked_artifact_is_not_followed() {
    let dir = tempdir().join("artifacts");
    let add_one = cache_with(with_artifacts(&dir))
        .register(&read(guests::ADD_ONE))
        .await
        .expect("add-one");
    let target = artifact_of(&dir, &add_one);
    let elsewhere = tempdir().join("moved.cwasm");
    std::fs::rename(&target, &elsewhere).expect("move");
    symlink(&elsewhere, &target).expect("symlink");

    let node = cache_with(with_artifacts(&dir));
    node.register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    assert_eq!(
        (node.stats().artifact_rejections, node.stats().compiles),
        (1, 1)
    );
    adds_one(&node, &add_one).await;
}

/// An artifact directory others can write to, one owned by another user, and an
/// engine directory swapped for a symbolic link are refused with a clear error.
#[tokio::test]
async fn artifact_directories_others_control_are_refused() {
    let open = tempdir().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let refused = BurnCache::with_config(with_artifacts(&open)).expect_err("world-writable");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    assert!(refused.to_string().contains("777"), "{refused}");

    // Someone else's directory: as root, one given to `nobody`; otherwise one of
    // root's own.
    let foreign = if rustix::process::geteuid().is_root() {
        let dir = tempdir().join("foreign");
        std::fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        dir
    } else {
        PathBuf::from("/usr")
    };
    let refused = BurnCache::with_config(with_artifacts(&foreign)).expect_err("foreign");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");

    // The engine's directory made a symbolic link to a directory of the attacker's.
    let dir = tempdir().join("artifacts");
    let node = cache_with(with_artifacts(&dir));
    node.register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    let engine = artifact_files(&dir)[0]
        .parent()
        .expect("engine dir")
        .to_path_buf();
    let elsewhere = tempdir().join("elsewhere");
    std::fs::rename(&engine, &elsewhere).expect("move");
    symlink(&elsewhere, &engine).expect("symlink");
    let refused = BurnCache::with_config(with_artifacts(&dir)).expect_err("symlinked");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
}

/// The node key is made private, and refused once others may read it.
#[tokio::test]
async fn the_node_key_is_private() {
    let dir = tempdir().join("artifacts");
    cache_with(with_artifacts(&dir));
    let key = dir.join("node.key");
    let mode = std::fs::metadata(&key)
        .expect("a node key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let refused = BurnCache::with_config(with_artifacts(&dir)).expect_err("readable key");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
}

/// Two nodes given one key file use each other's artifacts; a malformed key file is
/// refused.
#[tokio::test]
async fn nodes_sharing_a_key_file_share_artifacts() {
    let key = tempdir().join("cluster.key");
    std::fs::write(&key, format!("{}\n", Digest::of(b"a cluster key"))).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let ours = tempdir().join("artifacts");
    let keyed = |dir: &Path| Config {
        artifact_key_file: Some(key.clone()),
        ..with_artifacts(dir)
    };
    let digest = cache_with(keyed(&ours))
        .register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    // Another node's directory, filled by copying (as a shared volume would be).
    let theirs = tempdir().join("artifacts");
    let node = cache_with(keyed(&theirs));
    let engine_dir = artifact_files(&theirs)
        .first()
        .map(|f| f.parent().expect("dir").to_path_buf());
    let engine_dir = engine_dir.unwrap_or_else(|| {
        let name = artifact_of(&ours, &digest)
            .parent()
            .and_then(|p| p.file_name())
            .expect("engine name")
            .to_owned();
        theirs.join(name)
    });
    std::fs::copy(
        artifact_of(&ours, &digest),
        engine_dir.join(format!("{digest}.cwasm")),
    )
    .expect("copy");
    node.register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    assert_eq!((node.stats().artifact_loads, node.stats().compiles), (1, 0));
    drop(node);

    std::fs::write(&key, "not hex\n").expect("key");
    let refused = BurnCache::with_config(keyed(&ours)).expect_err("bad key");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
}

/// A symbolic link where the old, predictable temporary name was is never written
/// through.
#[tokio::test]
async fn saving_an_artifact_does_not_write_through_a_planted_link() {
    let dir = tempdir().join("artifacts");
    let bytes = read(guests::ADD_ONE);
    let digest = Digest::of(&bytes);
    // The engine directory, as the node will name it.
    let probe = tempdir().join("probe");
    cache_with(with_artifacts(&probe))
        .register(&bytes)
        .await
        .expect("register");
    let engine_name = artifact_of(&probe, &digest)
        .parent()
        .and_then(|p| p.file_name())
        .expect("engine name")
        .to_owned();
    let engine = dir.join(engine_name);
    std::fs::create_dir_all(&engine).expect("mkdir");
    let victim = tempdir().join("victim");
    std::fs::write(&victim, "precious").expect("victim");
    symlink(
        &victim,
        engine.join(format!(".{digest}.{}.tmp", std::process::id())),
    )
    .expect("plant");
    cache_with(with_artifacts(&dir))
        .register(&bytes)
        .await
        .expect("register");
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    assert_eq!(artifact_files(&dir).len(), 1, "saved under its own name");
}

/// `cache clear` deletes the artifacts and nothing else of what is in the directory.
#[tokio::test]
async fn clearing_removes_only_what_burncache_wrote() {
    let dir = tempdir().join("artifacts");
    let digest = cache_with(with_artifacts(&dir))
        .register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    let engine = artifact_of(&dir, &digest)
        .parent()
        .expect("dir")
        .to_path_buf();
    std::fs::write(dir.join("notes.txt"), "mine").expect("write");
    std::fs::write(engine.join("mine.txt"), "mine").expect("write");
    let removed = burncache::clear_artifacts(&dir).expect("clear");
    assert_eq!(removed.files, 1);
    assert!(artifact_files(&dir).is_empty());
    assert!(dir.join("notes.txt").exists() && engine.join("mine.txt").exists());
    assert!(dir.join("node.key").exists(), "the key stays");
}

/// An object above the node's maximum component size is refused before its bytes
/// are read: a sparse 2 GiB file in a `file://` store, a 1 MiB object in S3 against
/// a 64 KiB maximum.
#[tokio::test]
async fn oversized_objects_are_refused_without_reading_them() {
    let root = tempdir().join("store");
    let store = Store::from_url(&burncache::file_url(&root)).expect("file store");
    let digest = Digest::of(b"the object's real bytes do not matter here");
    let path = root.join(store.key(&digest, burncache::SourceKind::Component));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(2 << 30))
        .expect("a sparse object");
    let node = cache_with(Config {
        store: Some(store),
        max_component_bytes: 64 << 20,
        ..Config::default()
    });
    let refused = node.register_by_hash(&digest).await.expect_err("oversized");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
    assert!(
        refused.to_string().contains("maximum component size"),
        "{refused}"
    );

    let server = S3Server::shared();
    let store = server.store("oversized");
    let key = object_store::path::Path::from(store.key(&digest, burncache::SourceKind::Component));
    raw_s3(server)
        .put(&key, vec![0u8; 1 << 20].into())
        .await
        .expect("put");
    let node = cache_with(Config {
        store: Some(store),
        max_component_bytes: 64 << 10,
        ..Config::default()
    });
    let refused = node.register_by_hash(&digest).await.expect_err("oversized");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
    // And bytes handed in directly are held to the same maximum.
    let refused = node
        .register(&vec![0u8; 128 << 10])
        .await
        .expect_err("too big");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");
}

/// Unknown digests cost one store request per not-found period, and registering
/// the bytes makes them callable at once.
#[tokio::test]
async fn unknown_digests_are_remembered_for_a_short_while() {
    let root = tempdir().join("store");
    let store = || Store::from_url(&burncache::file_url(&root)).expect("file store");
    let node = cache_with(Config {
        store: Some(store()),
        not_found_ttl: Duration::from_secs(2),
        ..Config::default()
    });
    let bytes = read(guests::ADD_ONE);
    let digest = Digest::of(&bytes);
    for _ in 0..5 {
        let e = node.register_by_hash(&digest).await.expect_err("unknown");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
    assert_eq!((node.stats().fetches, node.stats().negative_hits), (1, 4));

    // Published by another node: this one believes its memory for the period...
    store().publish(&digest, &bytes).await.expect("publish");
    assert_eq!(
        node.register_by_hash(&digest)
            .await
            .expect_err("remembered")
            .kind(),
        ErrorKind::NotFound
    );
    // ...then asks again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(node.register_by_hash(&digest).await, Ok(digest));
    assert_eq!(node.stats().fetches, 2);

    // Registering bytes here clears what was remembered of them at once.
    let other = read(guests::WORD_COUNT);
    let other_digest = Digest::of(&other);
    node.register_by_hash(&other_digest)
        .await
        .expect_err("unknown");
    node.register(&other).await.expect("register");
    assert_eq!(node.register_by_hash(&other_digest).await, Ok(other_digest));
}

/// Past `max_held`, the least recently used component is dropped; called again, it
/// is loaded back from its artifact (its bytes from the store), not compiled. What
/// could not come back (registered on a node without a store) is never dropped.
#[tokio::test]
async fn held_components_are_evicted_and_come_back() {
    let alone = cache_with(Config {
        max_held: 1,
        ..Config::default()
    });
    let add_one = alone
        .register(&read(guests::ADD_ONE))
        .await
        .expect("register");
    alone
        .register(&read(guests::WORD_COUNT))
        .await
        .expect("register");
    assert_eq!((alone.stats().components, alone.stats().evictions), (2, 0));
    adds_one(&alone, &add_one).await;

    let dir = tempdir().join("artifacts");
    let root = tempdir().join("store");
    let node = cache_with(Config {
        store: Some(Store::from_url(&burncache::file_url(&root)).expect("file store")),
        max_held: 2,
        ..with_artifacts(&dir)
    });
    let add_one = node.deploy(&read(guests::ADD_ONE)).await.expect("deploy").0;
    node.deploy(&read(guests::WORD_COUNT))
        .await
        .expect("deploy");
    node.deploy(&read(guests::ADVERSARY)).await.expect("deploy");
    let stats = node.stats();
    assert_eq!((stats.components, stats.evictions), (2, 1));
    assert!(
        !node.digests().contains(&add_one),
        "the least recently used went"
    );
    adds_one(&node, &add_one).await;
    let stats = node.stats();
    assert_eq!(
        (stats.compiles, stats.artifact_loads),
        (3, 1),
        "loaded back"
    );
    assert_eq!((stats.components, stats.evictions), (2, 2));
}

/// Past `max_held_bytes`, components are dropped too; past `artifact_max_bytes`,
/// the least recently used artifacts are deleted.
#[tokio::test]
async fn size_bounds_hold_in_memory_and_on_disk() {
    let dir = tempdir().join("artifacts");
    let root = tempdir().join("store");
    let node = cache_with(Config {
        store: Some(Store::from_url(&burncache::file_url(&root)).expect("file store")),
        max_held_bytes: 1,
        artifact_max_bytes: 1,
        ..with_artifacts(&dir)
    });
    let add_one = node.deploy(&read(guests::ADD_ONE)).await.expect("deploy").0;
    node.deploy(&read(guests::WORD_COUNT))
        .await
        .expect("deploy");
    let stats = node.stats();
    assert_eq!(stats.components, 1, "only the newest is held");
    assert!(stats.evictions >= 1);
    assert_eq!(burncache::artifact_stats(&dir).expect("stats").files, 1);
    assert!(stats.artifact_evictions >= 1);
    assert!(!node.digests().contains(&add_one));
}

//! Nodes on one store with one cluster key: each component compiled once for the
//! cluster, shared artifacts verified before use, nothing compiled read without the
//! key.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use burncache::{BurnCache, Config, Digest, Store};
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;

use crate::s3::S3Server;
use crate::store::raw_s3;
use crate::{cache_with, guests, json, no_limits, read, tempdir, value};

/// A key file derived from `seed`, mode 0600.
fn key_file(seed: u8) -> PathBuf {
    let file = tempdir().join("cluster.key");
    std::fs::write(&file, format!("{}\n", Digest::of(&[seed]))).expect("key");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    file
}

/// A node of the cluster on `store`: its own artifact directory, the cluster key.
fn member(store: &Store, key: Option<&PathBuf>) -> BurnCache {
    cache_with(Config {
        store: Some(store.clone()),
        artifact_dir: Some(tempdir().join("artifacts")),
        cluster_key_file: key.cloned(),
        ..Config::default()
    })
}

async fn adds_one(node: &BurnCache, digest: &Digest) {
    let out = node
        .execute(digest, json(json!({"n": 41})), &no_limits())
        .await
        .expect("call");
    assert_eq!(value(&out), json!({"n": 42}));
}

#[tokio::test]
async fn a_cluster_compiles_each_component_once() {
    let store = S3Server::shared().store("cluster-once");
    let key = key_file(0x5a);
    let first = member(&store, Some(&key));
    let (digest, _) = first.deploy(&read(guests::ADD_ONE)).await.expect("deploy");
    first.settle().await;
    assert_eq!(
        (first.stats().compiles, first.stats().artifact_shares),
        (1, 1)
    );

    // Another node, fresh: its first call loads what the first compiled.
    let second = member(&store, Some(&key));
    adds_one(&second, &digest).await;
    let stats = second.stats();
    assert_eq!((stats.compiles, stats.artifact_fetches), (0, 1));

    // A node without the key never reads compiled code from the store.
    let outsider = member(&store, None);
    adds_one(&outsider, &digest).await;
    let stats = outsider.stats();
    assert_eq!((stats.compiles, stats.artifact_fetches), (1, 0));
}

#[tokio::test]
async fn shared_artifacts_that_do_not_verify_are_compiled_locally() {
    let server = S3Server::shared();
    let store = server.store("cluster-tampered");
    let key = key_file(0x11);
    let first = member(&store, Some(&key));
    let (digest, _) = first.deploy(&read(guests::ADD_ONE)).await.expect("deploy");
    first.settle().await;
    // The shared object tampered with in the bucket.
    let raw = raw_s3(server);
    let objects: Vec<_> = futures::TryStreamExt::try_collect(raw.list(None))
        .await
        .expect("list");
    let shared = objects
        .iter()
        .find(|o| {
            let name = o.location.as_ref();
            name.contains("cluster-tampered") && name.ends_with(&format!("{digest}.cwasm"))
        })
        .expect("the shared artifact")
        .location
        .clone();
    let mut bytes = raw
        .get(&shared)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    raw.put(&shared, bytes.into()).await.expect("tamper");
    let node = member(&store, Some(&key));
    adds_one(&node, &digest).await;
    let stats = node.stats();
    assert_eq!(
        (
            stats.shared_rejections,
            stats.compiles,
            stats.artifact_fetches
        ),
        (1, 1, 0)
    );
    // It shared a sound one in place of the tampered one.
    node.settle().await;
    let healed = member(&store, Some(&key));
    adds_one(&healed, &digest).await;
    assert_eq!(
        (healed.stats().compiles, healed.stats().artifact_fetches),
        (0, 1)
    );

    // Another cluster's key on the same store: its artifacts live apart, so
    // neither cluster overwrites the other's...
    let stranger = member(&store, Some(&key_file(0x22)));
    adds_one(&stranger, &digest).await;
    stranger.settle().await;
    assert_eq!(stranger.stats().compiles, 1);
    let node = member(&store, Some(&key));
    adds_one(&node, &digest).await;
    assert_eq!(
        (node.stats().compiles, node.stats().artifact_fetches),
        (0, 1)
    );

    // ...and its seal, copied into this cluster's place, is refused.
    let artifacts: Vec<_> = futures::TryStreamExt::try_collect(raw.list(None))
        .await
        .expect("list");
    let theirs = artifacts
        .iter()
        .map(|o| o.location.clone())
        .find(|name| {
            name.as_ref().contains("cluster-tampered")
                && name.as_ref().ends_with(&format!("{digest}.cwasm"))
                && *name != shared
        })
        .expect("the other cluster's artifact");
    let sealed = raw
        .get(&theirs)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    raw.put(&shared, sealed.into()).await.expect("plant");
    let node = member(&store, Some(&key));
    adds_one(&node, &digest).await;
    assert_eq!(
        (node.stats().shared_rejections, node.stats().compiles),
        (1, 1)
    );
}

/// Keys that are no secret are refused: one byte repeated (as an all-zero example),
/// and the placeholders `deploy/secret.yaml` ships with, so applying it unchanged
/// runs nothing.
#[tokio::test]
async fn placeholder_and_weak_keys_are_refused() {
    let store = Store::from_url("memory://cluster-weak-keys").expect("memory");
    let weak = tempdir().join("zero.key");
    std::fs::write(&weak, "00".repeat(32)).expect("write");
    std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let Err(refused) = BurnCache::with_config(Config {
        store: Some(store.clone()),
        cluster_key_file: Some(weak),
        ..Config::default()
    }) else {
        panic!("an all-zero key");
    };
    assert_eq!(
        refused.kind(),
        burncache::ErrorKind::InvalidInput,
        "{refused}"
    );

    let secret = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/secret.yaml"
    ))
    .expect("deploy/secret.yaml");
    let value = |name: &str| {
        secret
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{name} in deploy/secret.yaml"))
    };
    let placeholder = tempdir().join("cluster.key");
    std::fs::write(&placeholder, value("cluster.key")).expect("write");
    std::fs::set_permissions(&placeholder, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let Err(refused) = BurnCache::with_config(Config {
        store: Some(store),
        cluster_key_file: Some(placeholder),
        ..Config::default()
    }) else {
        panic!("the shipped placeholder");
    };
    assert_eq!(
        refused.kind(),
        burncache::ErrorKind::InvalidInput,
        "{refused}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_burncache"))
        .args(["serve", "--admin-token", &value("admin-token")])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "the shipped admin token placeholder"
    );
}

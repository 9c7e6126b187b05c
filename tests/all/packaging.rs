//! What the published crates carry: each a copy of `wit/`, and the host the
//! JavaScript runtime's source with a standalone manifest. The copies must not
//! drift from what the workspace builds with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf()
}

/// Every file under `dir`, by its path relative to `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(base, &path, into);
            } else {
                let relative = path.strip_prefix(base).expect("under base").to_path_buf();
                into.insert(relative, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(dir, dir, &mut found);
    found
}

#[test]
fn each_crates_wit_is_the_workspaces() {
    let root = root();
    let canonical = files(&root.join("wit"));
    assert!(canonical.contains_key(Path::new("burncache.wit")));
    for copy in ["host/wit", "guest-sdk/wit"] {
        let copied = files(&root.join(copy));
        let differ: Vec<_> = canonical
            .keys()
            .chain(copied.keys())
            .filter(|name| canonical.get(*name) != copied.get(*name))
            .collect();
        assert!(
            differ.is_empty(),
            "{copy} differs from wit/ in {differ:?}: copy wit/ over it (cp -r wit/. {copy}/)"
        );
    }
}

fn manifest(path: &Path) -> toml::Table {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The components the host crate builds from source: (their source directory in
/// the host crate, their workspace member).
const NESTED: [(&str, &str); 2] = [
    ("js-runtime", "runtimes/js"),
    ("client-component", "runtimes/client"),
];

/// The standalone manifests the published crate builds its components with name the
/// dependencies the workspace builds them with.
#[test]
fn the_published_runtime_manifest_matches_the_workspaces() {
    let root = root();
    let workspace = manifest(&root.join("Cargo.toml"));
    let shared = &workspace["workspace"]["dependencies"];
    for (source, member_dir) in NESTED {
        let member = manifest(&root.join(member_dir).join("Cargo.toml"));
        let standalone = manifest(&root.join("host").join(source).join("Cargo.toml.in"));
        let resolved: toml::Table = member["dependencies"]
            .as_table()
            .expect("a table")
            .iter()
            .map(|(name, spec)| {
                let spec = if spec.get("workspace").and_then(toml::Value::as_bool) == Some(true) {
                    let mut table = match &shared[name.as_str()] {
                        toml::Value::String(version) => toml::Table::from_iter([(
                            "version".to_string(),
                            toml::Value::String(version.clone()),
                        )]),
                        toml::Value::Table(table) => table.clone(),
                        other => panic!("{name}: {other:?}"),
                    };
                    // A member's own features add to the workspace's.
                    if let Some(features) = spec.get("features") {
                        table.insert("features".to_string(), features.clone());
                    }
                    toml::Value::Table(table)
                } else {
                    spec.clone()
                };
                (name.clone(), spec)
            })
            .collect();
        assert_eq!(
            standalone["dependencies"].as_table(),
            Some(&resolved),
            "host/{source}/Cargo.toml.in's dependencies differ from {member_dir}/Cargo.toml's"
        );
        assert_eq!(standalone["lib"], member["lib"]);
    }
}

/// The versions a published crate builds its runtime with.
fn locked(path: &Path) -> std::collections::BTreeSet<(String, String)> {
    let lock = manifest(path);
    lock["package"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|package| package.get("source").is_some())
        .map(|package| {
            (
                package["name"].as_str().expect("a name").to_string(),
                package["version"].as_str().expect("a version").to_string(),
            )
        })
        .collect()
}

/// The published crate builds its components locked to versions the workspace builds
/// and tests them with (regenerate with `scripts/runtime-lock.sh` when they change).
#[test]
fn the_published_runtime_lockfile_is_the_workspaces() {
    let root = root();
    let workspace = locked(&root.join("Cargo.lock"));
    for (source, key) in [
        ("js-runtime", "rquickjs"),
        ("client-component", "wit-bindgen"),
    ] {
        let lockfile = format!("host/{source}/Cargo.lock.in");
        let published = locked(&root.join(&lockfile));
        assert!(
            published.iter().any(|(name, _)| name == key),
            "{lockfile} has {key}"
        );
        let stale: Vec<_> = published.difference(&workspace).collect();
        assert!(
            stale.is_empty(),
            "{lockfile} locks versions the workspace does not use: {stale:?}; regenerate \
             it with scripts/runtime-lock.sh"
        );
    }
}

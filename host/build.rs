//! Builds burncache's JavaScript runtime (`runtimes/js`, QuickJS) and its burn-cache
//! client component (`runtimes/client`, for `burncache compose`) for `wasm32-wasip2`
//! and embeds them, so every `burncache` binary runs scripts and composes guests
//! without anything else installed. The runtime's C half needs a clang that targets
//! WebAssembly and the wasi-libc headers: `scripts/setup.sh` installs both (Debian's
//! `clang-19` and `wasi-libc`).
//!
//! `BURNCACHE_JS_RUNTIME=path/to/runtime.wasm` embeds a runtime built elsewhere
//! instead.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A component built from source in the host crate for `wasm32-wasip2` and embedded.
struct Nested {
    /// What it is, for messages.
    what: &'static str,
    /// Its source directory in the host crate (`src/`, `Cargo.toml.in`,
    /// `Cargo.lock.in`).
    source: &'static str,
    /// Its workspace member.
    member: &'static str,
    /// The file cargo builds.
    artifact: &'static str,
    /// The file embedded, in OUT_DIR.
    embedded: &'static str,
    /// Whether it has C to compile (QuickJS).
    c: bool,
}

const JS_RUNTIME: Nested = Nested {
    what: "the JavaScript runtime",
    source: "js-runtime",
    member: "runtimes/js",
    artifact: "burncache_js_runtime.wasm",
    embedded: "js-runtime.wasm",
    c: true,
};

const CLIENT: Nested = Nested {
    what: "the burn-cache client component",
    source: "client-component",
    member: "runtimes/client",
    artifact: "burncache_client.wasm",
    embedded: "client.wasm",
    c: false,
};

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // docs.rs builds documentation only, without clang or the network: no components.
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    if std::env::var_os("DOCS_RS").is_some() {
        for nested in [JS_RUNTIME, CLIENT] {
            std::fs::write(out_dir.join(nested.embedded), b"").expect("write a placeholder");
        }
        return;
    }
    println!("cargo:rerun-if-env-changed=BURNCACHE_JS_RUNTIME");
    if let Some(prebuilt) = std::env::var_os("BURNCACHE_JS_RUNTIME") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        std::fs::copy(&prebuilt, out_dir.join(JS_RUNTIME.embedded))
            .unwrap_or_else(|e| panic!("BURNCACHE_JS_RUNTIME={}: {e}", prebuilt.display()));
    } else {
        build(&JS_RUNTIME, &out_dir);
    }
    build(&CLIENT, &out_dir);
}

/// Builds `nested` and copies it into OUT_DIR.
fn build(nested: &Nested, out_dir: &Path) {
    let embedded = out_dir.join(nested.embedded);
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("a crate is inside a directory")
        .to_path_buf();
    // In the workspace, the component is a workspace member (its source in the host
    // crate), locked by the workspace's Cargo.lock. Built from a published crate,
    // there is no workspace: the source, WIT and standalone manifest are staged in
    // OUT_DIR in the same layout, and built there.
    let workspace_manifest = root.join(nested.member).join("Cargo.toml");
    let (manifest, target_dir) = if workspace_manifest.is_file() {
        for watched in [
            &format!("host/{}", nested.source),
            &format!("{}/Cargo.toml", nested.member),
            "wit",
            "Cargo.lock",
        ] {
            println!("cargo:rerun-if-changed={}", root.join(watched).display());
        }
        (workspace_manifest, root.join("target").join("js-runtime"))
    } else {
        for watched in [nested.source, "wit"] {
            println!(
                "cargo:rerun-if-changed={}",
                manifest_dir.join(watched).display()
            );
        }
        let source = manifest_dir.join(nested.source);
        let stage = out_dir.join(format!("{}-source", nested.source));
        let _ = std::fs::remove_dir_all(&stage);
        copy_tree(&manifest_dir.join("wit"), &stage.join("wit"));
        copy_tree(
            &source.join("src"),
            &stage.join("host").join(nested.source).join("src"),
        );
        let staged_manifest = stage.join(nested.member).join("Cargo.toml");
        std::fs::create_dir_all(staged_manifest.parent().expect("a parent"))
            .expect("create a staging directory");
        std::fs::copy(source.join("Cargo.toml.in"), &staged_manifest).expect("stage the manifest");
        // The versions the workspace builds and tests it with (a test keeps this
        // lockfile a subset of the workspace's), so the build is locked too.
        std::fs::copy(
            source.join("Cargo.lock.in"),
            staged_manifest.with_file_name("Cargo.lock"),
        )
        .expect("stage the lockfile");
        (staged_manifest, out_dir.join("nested-target"))
    };

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // No debug info: it would triple the component, and the engine's own frames
        // mean nothing to a script's author (scripts get JavaScript stack traces).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    if nested.c {
        // QuickJS's C is compiled with the system's clang, not a downloaded SDK.
        build.env("RQUICKJS_SYS_NO_WASI_SDK", "1");
        if std::env::var_os("CC_wasm32_wasip2").is_none() {
            let clang = find_clang().unwrap_or_else(|| {
                panic!(
                    "building the JavaScript runtime needs clang with the WebAssembly target \
                     (run scripts/setup.sh, or set CC_wasm32_wasip2)"
                )
            });
            build.env("CC_wasm32_wasip2", &clang);
            if let Some(ar) = sibling_ar(&clang) {
                build.env("AR_wasm32_wasip2", ar);
            }
        }
        if std::env::var_os("CFLAGS_wasm32_wasip2").is_none() {
            let headers = Path::new("/usr/include/wasm32-wasi");
            assert!(
                headers.is_dir(),
                "building the JavaScript runtime needs the wasi-libc headers in {} \
                 (run scripts/setup.sh, or set CFLAGS_wasm32_wasip2)",
                headers.display()
            );
            build.env(
                "CFLAGS_wasm32_wasip2",
                format!("-isystem {}", headers.display()),
            );
        }
    }
    // The outer build's flags are for the host, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("run cargo to build {}: {e}", nested.what));
    assert!(
        status.success(),
        "building {} ({}) failed; is the wasm32-wasip2 target installed? (scripts/setup.sh)",
        nested.what,
        nested.member
    );
    let built = target_dir
        .join("wasm32-wasip2")
        .join("release")
        .join(nested.artifact);
    std::fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), embedded.display()));
}

/// Copies the files under `from` to `to`, directories included.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
        }
    }
}

/// A clang that can target `wasm32-wasip2`: the newest versioned one first (Debian's
/// default `clang` 14 predates the target).
fn find_clang() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["clang-21", "clang-20", "clang-19", "clang"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// `llvm-ar-19` beside `clang-19`, when there is one.
fn sibling_ar(clang: &Path) -> Option<PathBuf> {
    let name = clang.file_name()?.to_str()?;
    let version = name.strip_prefix("clang")?;
    let ar = clang.with_file_name(format!("llvm-ar{version}"));
    ar.is_file().then_some(ar)
}

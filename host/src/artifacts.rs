//! Compiled code that survives restarts: serialized components in a directory this
//! host owns, keyed by (engine compatibility hash, digest).
//!
//! Trust: deserializing compiled code runs whatever machine code the file holds, so
//! this module only ever loads files it wrote itself. They live in a directory
//! created with mode 0700, every file carries a SHA-256 of its contents that is
//! checked before use, and a file owned by another user is refused. Compiled code is
//! never taken from an object store or from a caller. A truncated or corrupted file
//! is deleted and the component compiled again.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Digest, Error};

/// The first bytes of every artifact file: what it is and the format's version.
const MAGIC: &[u8; 16] = b"burncache-cwasm1";
const HEADER: usize = MAGIC.len() + 32;

/// The artifact directory of one engine configuration.
pub(crate) struct Artifacts {
    dir: PathBuf,
}

/// What an artifact directory holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArtifactStats {
    /// The directory, every engine configuration's artifacts below it.
    pub dir: PathBuf,
    /// Artifact files, over all engine configurations.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// How many engine configurations have artifacts here.
    pub engines: u64,
}

impl Artifacts {
    /// Opens (creating if need be) the artifacts of `engine` under `root`.
    pub(crate) fn open(root: &Path, engine: &Engine) -> Result<Artifacts, Error> {
        let dir = root.join(engine_key(engine));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::Backend(format!(
                    "cannot create the artifact directory {}: {e}",
                    dir.display()
                ))
            })?;
        Ok(Artifacts { dir })
    }

    fn file(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// Loads the compiled component for `digest`, if this host saved a sound one.
    /// A file that fails any check is deleted, so the caller compiles afresh.
    pub(crate) fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.file(digest);
        let bytes = match read_own_file(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(why) => {
                tracing::warn!(path = %path.display(), "discarding a compiled artifact: {why}");
                let _ = fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: `bytes` come from a file in this host's own 0700 directory, owned by
        // this user, written by `save` below from `Component::serialize` for an engine
        // with the same compatibility hash (the directory's name), and their SHA-256
        // matched the one `save` recorded, so they are exactly what this host wrote.
        // wasmtime itself also checks the engine configuration in the header.
        let loaded = unsafe { Component::deserialize(engine, &bytes[HEADER..]) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding a compiled artifact wasmtime refused: {e:#}");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves a compiled component for later processes: written to a temporary file,
    /// flushed, then renamed into place, so a reader never sees half a file.
    pub(crate) fn save(&self, digest: &Digest, component: &Component) -> Result<(), Error> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Backend(format!(
                "cannot save the compiled artifact of {digest}: {e}"
            ))
        };
        let code = component.serialize().map_err(|e| fail(&e))?;
        let checksum = Sha256::digest(&code);
        let temporary = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| fail(&e))?;
        let written = file
            .write_all(MAGIC)
            .and_then(|()| file.write_all(&checksum))
            .and_then(|()| file.write_all(&code))
            .and_then(|()| file.sync_all());
        if let Err(e) = written.and_then(|()| fs::rename(&temporary, self.file(digest))) {
            let _ = fs::remove_file(&temporary);
            return Err(fail(&e));
        }
        Ok(())
    }
}

/// Reads an artifact file and checks it: `Ok(None)` when there is none, `Err` with
/// the reason when it must not be used.
fn read_own_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(format!(
            "owned by uid {}, not by this user ({me})",
            metadata.uid()
        ));
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an artifact this host wrote (bad header or truncated)".into());
    }
    let recorded = &bytes[MAGIC.len()..HEADER];
    if Sha256::digest(&bytes[HEADER..]).as_slice() != recorded {
        return Err("checksum mismatch (truncated or corrupted)".into());
    }
    Ok(Some(bytes))
}

/// The engine's precompile compatibility hash, as a stable hex name: artifacts from
/// one wasmtime version or configuration are never offered to another.
fn engine_key(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// The default artifact directory: `$XDG_CACHE_HOME/burncache/artifacts`
/// (`~/.cache/burncache/artifacts`).
pub fn default_artifact_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("burncache")
        .join("artifacts")
}

/// Counts what an artifact directory holds, over every engine configuration.
///
/// # Errors
///
/// [`Error::Backend`] when the directory exists but cannot be read.
pub fn artifact_stats(root: &Path) -> Result<ArtifactStats, Error> {
    let mut stats = ArtifactStats {
        dir: root.to_path_buf(),
        ..ArtifactStats::default()
    };
    let engines = match fs::read_dir(root) {
        Ok(engines) => engines,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stats),
        Err(e) => {
            return Err(Error::Backend(format!(
                "cannot read {}: {e}",
                root.display()
            )));
        }
    };
    for engine in engines.flatten().filter(|e| e.path().is_dir()) {
        stats.engines += 1;
        for file in fs::read_dir(engine.path()).into_iter().flatten().flatten() {
            let is_artifact = file.path().extension().is_some_and(|x| x == "cwasm");
            if let (true, Ok(metadata)) = (is_artifact, file.metadata()) {
                stats.files += 1;
                stats.bytes += metadata.len();
            }
        }
    }
    Ok(stats)
}

/// Deletes every artifact under `root`, for every engine configuration.
///
/// # Errors
///
/// [`Error::Backend`] when something cannot be deleted.
pub fn clear_artifacts(root: &Path) -> Result<ArtifactStats, Error> {
    let before = artifact_stats(root)?;
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(before),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(before),
        Err(e) => Err(Error::Backend(format!(
            "cannot clear {}: {e}",
            root.display()
        ))),
    }
}

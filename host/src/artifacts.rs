//! Compiled code that survives restarts: serialized components in a directory this
//! host owns, keyed by (engine compatibility hash, digest).
//!
//! Trust: deserializing compiled code runs whatever machine code the file holds, so
//! this module only loads a file whose MAC, under a key only this user can read,
//! covers its code together with the digest it was compiled from and the engine it
//! was compiled for. A file planted by someone without the key, or copied from one
//! digest's name to another's, fails the MAC and is deleted. The directory must be
//! owned by this user and writable by no one else; files are opened relative to the
//! directory's descriptor without following symlinks, and checked on the opened
//! descriptor. Compiled code is never taken from an object store or from a caller.
//!
//! The key is 32 random bytes kept as hex in `<dir>/node.key` (mode 0600, made on
//! first use), or a key file the operator provides: nodes given the same key file
//! can share one artifact directory's contents.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Digest, Error};

/// The first bytes of every artifact file: what it is and the format's version.
const MAGIC: &[u8; 16] = b"burncache-cwasm2";
const TAG: usize = 32;
const HEADER: usize = MAGIC.len() + TAG;
/// The name of the node key in the artifact directory.
pub const NODE_KEY: &str = "node.key";
/// The largest artifact file read: well above any component's compiled code.
const LARGEST_ARTIFACT: u64 = 4 << 30;

type Tagger = Hmac<Sha256>;

/// The key artifacts are authenticated with.
#[derive(Clone)]
pub(crate) struct ArtifactKey([u8; 32]);

impl std::fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArtifactKey(..)")
    }
}

/// Seals compiled code as the artifact of one digest for one engine, under one key,
/// and opens such seals: the node's own artifacts under the node key, the ones a
/// cluster shares through its store under the cluster key.
pub(crate) struct Seal {
    key: ArtifactKey,
    engine: String,
    /// What the seals are for (`local`, `shared`): one key given for both never
    /// makes a seal of one kind pass for the other.
    purpose: &'static str,
}

impl Seal {
    /// Seals for artifacts the cluster shares through its store.
    pub(crate) fn shared(key: ArtifactKey, engine: &Engine) -> Seal {
        Seal {
            key,
            engine: engine_key(engine),
            purpose: "shared",
        }
    }

    /// A short public name of the key, so that clusters with different keys on one
    /// store keep their shared artifacts apart rather than overwrite each other's.
    pub(crate) fn key_id(&self) -> String {
        let mut mac = Tagger::new_from_slice(&self.key.0).expect("HMAC takes any key length");
        mac.update(b"burncache key id");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// Where in the store this seal's artifacts live: the engine configuration,
    /// then the key's public name.
    pub(crate) fn space(&self) -> String {
        format!("{}/{}", self.engine, self.key_id())
    }

    /// The MAC of `code` as the artifact of `digest` for this engine.
    fn tag(&self, digest: &Digest, code: &[u8]) -> Tagger {
        let mut mac = Tagger::new_from_slice(&self.key.0).expect("HMAC takes any key length");
        mac.update(b"burncache artifact v2\0");
        mac.update(self.purpose.as_bytes());
        mac.update(b"\0");
        mac.update(self.engine.as_bytes());
        mac.update(b"\0");
        mac.update(digest.as_bytes());
        mac.update(code);
        mac
    }

    /// `code` sealed: the header, the MAC, the code.
    pub(crate) fn seal(&self, digest: &Digest, code: &[u8]) -> Vec<u8> {
        let tag = self.tag(digest, code).finalize().into_bytes();
        let mut sealed = Vec::with_capacity(HEADER + code.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&tag);
        sealed.extend_from_slice(code);
        sealed
    }

    /// The code in `sealed`, if its seal is this key's for `digest` on this engine.
    pub(crate) fn unseal<'a>(&self, digest: &Digest, sealed: &'a [u8]) -> Result<&'a [u8], String> {
        if sealed.len() < HEADER || &sealed[..MAGIC.len()] != MAGIC {
            return Err("not a burncache artifact (bad header or truncated)".into());
        }
        let (header, code) = sealed.split_at(HEADER);
        self.tag(digest, code)
            .verify_slice(&header[MAGIC.len()..])
            .map_err(|_| {
                "its MAC does not match (planted, made under another key, copied from another \
                 digest, or corrupted)"
                    .to_string()
            })?;
        Ok(code)
    }

    /// The component in `sealed`, if its seal verifies.
    pub(crate) fn open(
        &self,
        engine: &Engine,
        digest: &Digest,
        sealed: &[u8],
    ) -> Result<Component, String> {
        let code = self.unseal(digest, sealed)?;
        // SAFETY: the MAC under this seal's key (which only this node, or the nodes
        // of its cluster, hold) covers this engine's compatibility hash, this digest
        // and every byte of the code: the code is what `Component::serialize` gave a
        // key holder for this digest on an engine like this one. wasmtime also
        // checks the engine configuration recorded in the code itself.
        unsafe { Component::deserialize(engine, code) }
            .map_err(|e| format!("wasmtime refused it: {e:#}"))
    }
}

/// The artifact directory of one engine configuration.
pub(crate) struct Artifacts {
    /// The engine's directory, opened once and checked; every file is reached
    /// through it.
    dir: OwnedFd,
    path: PathBuf,
    seal: Seal,
    /// The most the engine's directory may hold; the least recently used artifacts
    /// are deleted past it.
    max_bytes: u64,
}

/// Why an artifact was not loaded.
pub(crate) enum Unloaded {
    /// There is none for this digest.
    Missing,
    /// There was one, and it failed a check (logged); it has been deleted.
    Rejected,
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
    /// Opens (creating if need be) the artifacts of `engine` under `root`,
    /// authenticated with the key in `key_file` (default: `root/node.key`, made if
    /// missing).
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] when the directory or the key is owned by
    /// another user or open to others; [`Error::Backend`] when they cannot be made
    /// or read.
    pub(crate) fn open(
        root: &Path,
        engine: &Engine,
        key_file: Option<&Path>,
        max_bytes: u64,
    ) -> Result<Artifacts, Error> {
        let engine_name = engine_key(engine);
        let path = root.join(&engine_name);
        // A directory that is already there is checked before anything is made in it.
        if fs::symlink_metadata(root).is_ok() {
            open_own_dir(root)?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                Error::Backend(format!(
                    "cannot create the artifact directory {}: {e}",
                    path.display()
                ))
            })?;
        let root_fd = open_own_dir(root)?;
        let dir = open_own_dir(&path)?;
        let key = match key_file {
            Some(file) => read_key(file)?,
            None => node_key(&root_fd, root)?,
        };
        Ok(Artifacts {
            dir,
            path,
            seal: Seal {
                key,
                engine: engine_name,
                purpose: "local",
            },
            max_bytes,
        })
    }

    fn name(digest: &Digest) -> String {
        format!("{digest}.cwasm")
    }

    /// Loads the compiled component for `digest`, if this host (or a node sharing
    /// its key) saved a sound one. A file that fails any check is deleted, so the
    /// caller compiles afresh.
    pub(crate) fn load(&self, engine: &Engine, digest: &Digest) -> Result<Component, Unloaded> {
        let name = Self::name(digest);
        let bytes = match self.read_checked(&name, digest) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(Unloaded::Missing),
            Err(why) => return Err(self.reject(&name, why)),
        };
        // Read through the descriptor of a directory of this user's that no one else
        // may write, from a regular file of this user's; the seal says the rest.
        self.seal
            .open(engine, digest, &bytes)
            .map_err(|why| self.reject(&name, why))
    }

    fn reject(&self, name: &str, why: String) -> Unloaded {
        tracing::warn!(dir = %self.path.display(), name, "discarding a compiled artifact: {why}");
        let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
        Unloaded::Rejected
    }

    /// Reads an artifact file and checks it: `Ok(None)` when there is none, `Err`
    /// with the reason when it must not be used.
    fn read_checked(&self, name: &str, digest: &Digest) -> Result<Option<Vec<u8>>, String> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => return Err("a symbolic link".to_string()),
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat it: {e}"))?;
        check_owned(&stat, rustix::fs::FileType::RegularFile, 0o022)?;
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size > LARGEST_ARTIFACT {
            return Err(format!("{size} bytes, larger than any artifact"));
        }
        let mut file = fs::File::from(fd);
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        Read::by_ref(&mut file)
            .take(LARGEST_ARTIFACT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read it: {e}"))?;
        self.seal.unseal(digest, &bytes)?;
        // Marks it used, for the directory's size bound.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(bytes))
    }

    /// Saves a compiled component for later processes: written to a temporary file
    /// of a random name, made exclusively, flushed, then renamed into place, so a
    /// reader never sees half a file. Then keeps the directory within its bound.
    /// Returns how many artifacts were deleted to keep the bound.
    pub(crate) fn save(&self, digest: &Digest, component: &Component) -> Result<u64, Error> {
        let code = component.serialize().map_err(|e| {
            Error::Backend(format!(
                "cannot save the compiled artifact of {digest}: {e}"
            ))
        })?;
        self.save_code(digest, &code)
    }

    /// Saves compiled code, as [`Artifacts::save`] does a component.
    pub(crate) fn save_code(&self, digest: &Digest, code: &[u8]) -> Result<u64, Error> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Backend(format!(
                "cannot save the compiled artifact of {digest}: {e}"
            ))
        };
        let sealed = self.seal.seal(digest, code);
        let temporary = format!(".{digest}.{}.tmp", hex::encode(random::<8>()?));
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir, &temporary, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| fail(&e))?;
        let mut file = fs::File::from(fd);
        let written = file.write_all(&sealed).and_then(|()| file.sync_all());
        let placed = written.and_then(|()| {
            rustix::fs::renameat(&self.dir, &temporary, &self.dir, Self::name(digest))
                .map_err(std::io::Error::from)
        });
        if let Err(e) = placed {
            let _ = rustix::fs::unlinkat(&self.dir, &temporary, AtFlags::empty());
            return Err(fail(&e));
        }
        Ok(self.trim(digest))
    }

    /// Deletes the least recently used artifacts until the directory holds at
    /// most `max_bytes`, or only `keep` (the one just saved) is left. Returns how
    /// many were deleted.
    fn trim(&self, keep: &Digest) -> u64 {
        let keep = Self::name(keep);
        let mut held: Vec<(SystemTime, u64, String)> = Vec::new();
        let Ok(entries) = fs::read_dir(&self.path) else {
            return 0;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(stat) = rustix::fs::statat(&self.dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            if is_artifact_name(&name) && name.ends_with(".tmp") {
                // A save that crashed half-way leaves one; a live save takes seconds.
                let age = u64::try_from(stat.st_mtime).ok().and_then(|t| {
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .ok()?
                        .as_secs()
                        .checked_sub(t)
                });
                if age.is_some_and(|age| age > 3600) {
                    let _ = rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty());
                }
                continue;
            }
            if !name.ends_with(".cwasm") {
                continue;
            }
            let modified = SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0));
            held.push((modified, u64::try_from(stat.st_size).unwrap_or(0), name));
        }
        let mut total: u64 = held.iter().map(|(_, size, _)| size).sum();
        if total <= self.max_bytes {
            return 0;
        }
        held.sort_by_key(|(modified, _, _)| *modified);
        let mut deleted = 0;
        for (_, size, name) in held {
            if total <= self.max_bytes {
                break;
            }
            if name == keep {
                continue;
            }
            if rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty()).is_ok() {
                total = total.saturating_sub(size);
                deleted += 1;
                tracing::info!(dir = %self.path.display(), name, "evicted a compiled artifact");
            }
        }
        deleted
    }
}

/// `N` random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Backend(format!("the operating system's random source: {e}")))?;
    Ok(bytes)
}

/// Checks that `stat` is a `kind` owned by this user, with none of the `forbidden`
/// permission bits.
fn check_owned(
    stat: &rustix::fs::Stat,
    kind: rustix::fs::FileType,
    forbidden: u32,
) -> Result<(), String> {
    let found = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    if found != kind {
        return Err(format!("a {found:?}, not a {kind:?}"));
    }
    let me = rustix::process::geteuid().as_raw();
    if stat.st_uid != me {
        return Err(format!(
            "owned by uid {}, not by this user ({me})",
            stat.st_uid
        ));
    }
    let mode = stat.st_mode & 0o777;
    if mode & forbidden != 0 {
        return Err(format!("its mode is {mode:o}: open to others"));
    }
    Ok(())
}

/// Opens a directory this user owns and no one else can write to, without
/// following a symbolic link, and checks it on the opened descriptor.
fn open_own_dir(path: &Path) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let refused = |why: String| {
        Error::PermissionDenied(format!(
            "refusing the artifact directory {}: {why}; use a directory of your own \
             (chmod 700) or another --artifacts",
            path.display()
        ))
    };
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            refused("it is a symbolic link or not a directory".to_string())
        }
        e => Error::Backend(format!("cannot open {}: {e}", path.display())),
    })?;
    let stat = rustix::fs::fstat(&fd)
        .map_err(|e| Error::Backend(format!("cannot stat {}: {e}", path.display())))?;
    check_owned(&stat, rustix::fs::FileType::Directory, 0o022).map_err(refused)?;
    Ok(fd)
}

/// The node key in the artifact directory `root`, made (32 random bytes, mode
/// 0600, created exclusively) if there is none.
fn node_key(root: &OwnedFd, path: &Path) -> Result<ArtifactKey, Error> {
    if let Some(key) = read_key_at(root.as_fd(), NODE_KEY, &path.join(NODE_KEY))? {
        return Ok(key);
    }
    // Written whole under a name of its own, then linked into place, which fails
    // if another process got there first: no reader ever sees a half-written key.
    let backend = |e: &dyn std::fmt::Display| {
        Error::Backend(format!(
            "cannot make the node key in {}: {e}",
            path.display()
        ))
    };
    let key = random::<32>()?;
    let temporary = format!(".node.key.{}.tmp", hex::encode(random::<8>()?));
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(root, &temporary, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| backend(&e))?;
    let mut file = fs::File::from(fd);
    let written = file
        .write_all(format!("{}\n", hex::encode(key)).as_bytes())
        .and_then(|()| file.sync_all());
    let linked = written.and_then(|()| {
        rustix::fs::linkat(root, &temporary, root, NODE_KEY, AtFlags::empty())
            .map_err(std::io::Error::from)
    });
    let _ = rustix::fs::unlinkat(root, &temporary, AtFlags::empty());
    match linked {
        Ok(()) => Ok(ArtifactKey(key)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key_at(root.as_fd(), NODE_KEY, &path.join(NODE_KEY))?
                .ok_or_else(|| backend(&"it vanished as it was made"))
        }
        Err(e) => Err(backend(&e)),
    }
}

/// Reads a key file the operator gave: a regular file (a symbolic link to one is
/// followed, as a mounted Kubernetes secret is) of this user's or root's, that no
/// one outside its group may read and only its owner may write.
pub(crate) fn read_key(path: &Path) -> Result<ArtifactKey, Error> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            return Err(Error::InvalidInput(format!(
                "there is no key file {}",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Error::Backend(format!(
                "cannot open the key {}: {e}",
                path.display()
            )));
        }
    };
    let stat = rustix::fs::fstat(&fd)
        .map_err(|e| Error::Backend(format!("cannot stat the key {}: {e}", path.display())))?;
    let me = rustix::process::geteuid().as_raw();
    let refused = |why: String| {
        Error::PermissionDenied(format!(
            "refusing the key {}: {why}; it must be a regular file of this user's (or \
             root's), mode 0600 or 0640",
            path.display()
        ))
    };
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(refused("not a regular file".to_string()));
    }
    if stat.st_uid != me && stat.st_uid != 0 {
        return Err(refused(format!("owned by uid {}", stat.st_uid)));
    }
    let mode = stat.st_mode & 0o777;
    if mode & 0o027 != 0 {
        return Err(refused(format!("its mode is {mode:o}")));
    }
    parse_key(fd, path)
}

/// Reads the node key `name` in `dir`: a regular file of this user's that no one
/// else may read or write, never through a link. `None` when there is none.
fn read_key_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: impl rustix::path::Arg,
    path: &Path,
) -> Result<Option<ArtifactKey>, Error> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(Error::PermissionDenied(format!(
                "refusing the artifact key {}: a symbolic link",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Error::Backend(format!(
                "cannot open the key {}: {e}",
                path.display()
            )));
        }
    };
    let stat = rustix::fs::fstat(&fd)
        .map_err(|e| Error::Backend(format!("cannot stat the key {}: {e}", path.display())))?;
    check_owned(&stat, rustix::fs::FileType::RegularFile, 0o077).map_err(|why| {
        Error::PermissionDenied(format!(
            "refusing the artifact key {}: {why}; it must be this user's, mode 0600",
            path.display()
        ))
    })?;
    parse_key(fd, path).map(Some)
}

/// A key's 64 hex digits, from an opened key file.
fn parse_key(fd: OwnedFd, path: &Path) -> Result<ArtifactKey, Error> {
    let mut text = String::new();
    fs::File::from(fd)
        .take(1024)
        .read_to_string(&mut text)
        .map_err(|e| Error::Backend(format!("cannot read the key {}: {e}", path.display())))?;
    let mut key = [0u8; 32];
    let weak = |key: &[u8; 32]| key.iter().all(|b| *b == key[0]);
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        Error::InvalidInput(format!(
            "the key {} must hold 64 hex digits (32 bytes); make one with \
             `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`",
            path.display()
        ))
    })?;
    if weak(&key) {
        return Err(Error::InvalidInput(format!(
            "the key {} is one byte repeated (an example's placeholder?); make a random \
             one",
            path.display()
        )));
    }
    Ok(ArtifactKey(key))
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

/// Whether `name` is one of the engine directories this module makes.
fn is_engine_dir_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a file this module writes in an engine directory.
fn is_artifact_name(name: &str) -> bool {
    name.ends_with(".cwasm") || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// The default artifact directory: `$XDG_CACHE_HOME/burncache/artifacts`
/// (`~/.cache/burncache/artifacts`); `None` without a cache directory (no home),
/// rather than a directory shared with other users.
pub fn default_artifact_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|dir| dir.join("burncache").join("artifacts"))
}

/// The engine directories under `root` (by their names; never through a link).
fn engine_dirs(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Backend(format!(
                "cannot read {}: {e}",
                root.display()
            )));
        }
    };
    Ok(entries
        .flatten()
        .filter(|entry| {
            entry.file_name().to_str().is_some_and(is_engine_dir_name)
                && entry.file_type().is_ok_and(|t| t.is_dir())
        })
        .map(|entry| entry.path())
        .collect())
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
    for engine in engine_dirs(root)? {
        stats.engines += 1;
        for file in fs::read_dir(engine).into_iter().flatten().flatten() {
            let is_artifact = file.path().extension().is_some_and(|x| x == "cwasm");
            if let (true, Ok(metadata)) = (is_artifact, file.metadata()) {
                stats.files += 1;
                stats.bytes += metadata.len();
            }
        }
    }
    Ok(stats)
}

/// Deletes every artifact under `root`, for every engine configuration: only the
/// files burncache writes there (`*.cwasm` and its temporary files, in its engine
/// directories), and those directories once empty. Anything else in `root` stays,
/// the node key too.
///
/// # Errors
///
/// [`Error::Backend`] when something cannot be deleted.
pub fn clear_artifacts(root: &Path) -> Result<ArtifactStats, Error> {
    let before = artifact_stats(root)?;
    if fs::symlink_metadata(root).is_err() {
        return Ok(before);
    }
    // Through descriptors, never a path that could be swapped for a link: the root
    // and each engine directory are opened without following links and checked.
    let root_fd = open_own_dir(root)?;
    for engine in engine_dirs(root)? {
        let Some(name) = engine.file_name() else {
            continue;
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(dir) = rustix::fs::openat(&root_fd, name, flags, Mode::empty()) else {
            continue;
        };
        let owned = rustix::fs::fstat(&dir)
            .map_err(|e| e.to_string())
            .and_then(|stat| check_owned(&stat, rustix::fs::FileType::Directory, 0o022));
        if owned.is_err() {
            continue;
        }
        let mut entries = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| Error::Backend(format!("cannot read {}: {e}", engine.display())))?;
        let mut ours = Vec::new();
        while let Some(entry) = entries.read() {
            let entry = entry
                .map_err(|e| Error::Backend(format!("cannot read {}: {e}", engine.display())))?;
            if let Ok(file) = entry.file_name().to_str()
                && is_artifact_name(file)
            {
                ours.push(file.to_string());
            }
        }
        for file in ours {
            match rustix::fs::unlinkat(&dir, file.as_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::Backend(format!(
                        "cannot delete {}: {e}",
                        engine.join(&file).display()
                    )));
                }
            }
        }
        // Kept when something else is in it.
        let _ = rustix::fs::unlinkat(&root_fd, name, AtFlags::REMOVEDIR);
    }
    Ok(before)
}

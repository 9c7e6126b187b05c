//! Where component bytes live beyond one node: an object store chosen by URL, with
//! content-addressed, immutable objects at `<prefix>/sha256/<hex>.wasm` (components)
//! and `<prefix>/sha256/<hex>.js` (scripts).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, GetResult, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};

use crate::{Digest, Error, SourceKind};

/// How long one request to a remote store may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a remote store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a failing request is retried, all attempts together: a store that is down
/// fails a call within seconds, not minutes.
const RETRY_TIMEOUT: Duration = Duration::from_secs(3);

/// An object store holding component bytes by digest.
///
/// Chosen by URL:
/// - `file:///path`: a local directory (created if missing);
/// - `s3://bucket/prefix`: S3 or an S3-compatible server; endpoint, region and
///   credentials come from the usual `AWS_*` variables (`AWS_ENDPOINT_URL`,
///   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`);
/// - `memory://name`: an in-process store, shared by every `Store` of that name in
///   the process (for tests).
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// The key prefix, without a trailing slash; may be empty.
    prefix: String,
    url: String,
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The object was written.
    Created,
    /// An object was already there under this digest; content addressing makes it
    /// the same bytes (and fetches verify that).
    AlreadyExisted,
}

impl Store {
    /// Opens the store a URL names.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a malformed URL or an unknown scheme;
    /// [`Error::Backend`] when the store cannot be set up (a directory that cannot be
    /// created, an S3 configuration the client refuses).
    pub fn from_url(url: &str) -> Result<Store, Error> {
        Store::from_url_with_options(url, &[])
    }

    /// Opens the store a URL names, with settings that take precedence over the
    /// environment: for `s3://`, any `object_store` S3 key (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_allow_http`, ...).
    ///
    /// # Errors
    ///
    /// As [`Store::from_url`]; an unknown option, or options for a store that takes
    /// none, is [`Error::InvalidInput`].
    pub fn from_url_with_options(url: &str, options: &[(&str, &str)]) -> Result<Store, Error> {
        let invalid = |why: String| Error::InvalidInput(format!("store URL {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid("expected file:///path, s3://bucket/prefix or memory://name".into())
        })?;
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(
                        "a file URL needs an absolute path: file:///path".into(),
                    ));
                }
                if !options.is_empty() {
                    return Err(invalid("file:// stores take no options".into()));
                }
                Store::directory(Path::new(rest))
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("no bucket: expected s3://bucket/prefix".into()));
                }
                Store::s3(bucket, prefix, url, options)
            }
            "memory" if options.is_empty() => Ok(Store::memory(rest)),
            "memory" => Err(invalid("memory:// stores take no options".into())),
            other => Err(invalid(format!(
                "unknown scheme {other:?}; burncache knows file://, s3:// and memory://"
            ))),
        }
    }

    /// The store used when none is configured: `file://` under the user's data
    /// directory (`$XDG_DATA_HOME/burncache/store`, `~/.local/share/burncache/store`);
    /// `None` without one (no home directory), rather than a directory other users
    /// could make first.
    pub fn default_url() -> Option<String> {
        let base = dirs::data_dir()?;
        Some(format!(
            "file://{}",
            base.join("burncache").join("store").display()
        ))
    }

    fn directory(path: &Path) -> Result<Store, Error> {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::Backend(format!(
                "cannot create the store directory {}: {e}",
                path.display()
            ))
        })?;
        let objects = LocalFileSystem::new_with_prefix(path)
            .map_err(|e| Error::Backend(format!("cannot open {}: {e}", path.display())))?;
        Ok(Store {
            objects: Arc::new(objects),
            prefix: String::new(),
            url: format!("file://{}", path.display()),
        })
    }

    fn s3(bucket: &str, prefix: &str, url: &str, options: &[(&str, &str)]) -> Result<Store, Error> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: RETRY_TIMEOUT,
        };
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| Error::InvalidInput(format!("store option {key:?}: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        let objects = builder
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                humantime::format_duration(REQUEST_TIMEOUT).to_string(),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                humantime::format_duration(CONNECT_TIMEOUT).to_string(),
            )
            .build()
            .map_err(|e| Error::Backend(format!("store {url}: {e}")))?;
        Ok(Store {
            objects: Arc::new(objects),
            prefix: prefix.trim_matches('/').to_string(),
            url: url.to_string(),
        })
    }

    fn memory(name: &str) -> Store {
        static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
        let stores = STORES.get_or_init(Mutex::default);
        let objects = stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(InMemory::new()))
            .clone();
        Store {
            objects,
            prefix: String::new(),
            url: format!("memory://{name}"),
        }
    }

    /// The URL the store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of a component's bytes, `<prefix>/sha256/<hex>.wasm`, or of a script's,
    /// `<prefix>/sha256/<hex>.js`.
    pub fn key(&self, digest: &Digest, kind: SourceKind) -> String {
        self.object(digest, kind).to_string()
    }

    fn object(&self, digest: &Digest, kind: SourceKind) -> ObjectPath {
        self.path(&format!("sha256/{digest}.{}", kind.extension()))
    }

    fn path(&self, tail: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(tail)
        } else {
            ObjectPath::from(format!("{}/{tail}", self.prefix))
        }
    }

    fn backend(&self, e: impl fmt::Display) -> Error {
        Error::Backend(format!("store {}: {e}", self.url))
    }

    /// Writes a component's bytes under its digest, unless an object is already
    /// there (a create-only put: objects are immutable, publishing is idempotent).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store cannot be reached or refuses the write.
    pub async fn publish(&self, digest: &Digest, bytes: &[u8]) -> Result<Published, Error> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        let object = self.object(digest, SourceKind::of(bytes));
        match self.objects.put_opts(&object, payload, options).await {
            Ok(_) => Ok(Published::Created),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Published::AlreadyExisted),
            Err(e) => Err(self.backend(e)),
        }
    }

    /// Fetches a component's bytes, at most `max_bytes` of them, and checks that they
    /// hash to `digest`. The size the store reports is checked before any byte is
    /// read, and the bytes are counted as they stream in, so an oversized object
    /// costs nothing.
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`] when the store has no object for the digest;
    /// - [`Error::InvalidInput`] when the object is larger than `max_bytes`;
    /// - [`Error::Integrity`] when the object's bytes hash to something else (the
    ///   object is left in place for the operator; the message names its key);
    /// - [`Error::Backend`] when the store cannot be reached.
    pub async fn fetch(&self, digest: &Digest, max_bytes: u64) -> Result<Vec<u8>, Error> {
        use sha2::Digest as _;
        // Components are the common case; a script costs one more request.
        let (path, got) = match self.get(digest, SourceKind::Component).await? {
            Some(found) => found,
            None => match self.get(digest, SourceKind::Script).await? {
                Some(found) => found,
                None => return Err(Error::NotFound(*digest)),
            },
        };
        let too_large = || {
            Error::InvalidInput(format!(
                "the store's object for {digest} is larger than this node's \
                 {max_bytes}-byte maximum component size; it was not read"
            ))
        };
        let mut hasher = sha2::Sha256::new();
        let bytes = self
            .read_capped(got, max_bytes, too_large, |chunk| hasher.update(chunk))
            .await?;
        let actual = Digest::from_bytes(hasher.finalize().into());
        if actual != *digest {
            return Err(Error::Integrity(format!(
                "object {path} in {} hashes to {actual}, not {digest}; it was not used, and \
                 is left in place for the operator",
                self.url
            )));
        }
        Ok(bytes)
    }

    /// An object's bytes, refused with `too_large` when the size the store reports,
    /// or the bytes as they stream in, pass `max_bytes`; each chunk is shown to
    /// `each` as it arrives.
    async fn read_capped(
        &self,
        got: GetResult,
        max_bytes: u64,
        too_large: impl Fn() -> Error,
        mut each: impl FnMut(&[u8]),
    ) -> Result<Vec<u8>, Error> {
        if got.meta.size > max_bytes {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.backend(e))? {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large());
            }
            each(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Whether the store answers: one listing of a prefix that need not hold
    /// anything (empty is an answer; a missing bucket is not).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store cannot be reached, or its bucket is missing.
    pub async fn check(&self) -> Result<(), Error> {
        let probe = self.path("readiness");
        self.objects
            .list(Some(&probe))
            .try_next()
            .await
            .map(drop)
            .map_err(|e| self.backend(e))
    }

    /// Where a cluster's shared compiled artifact of `digest` lives, in `space` (the
    /// engine configuration and the cluster key's public name).
    pub fn artifact_key(&self, space: &str, digest: &Digest) -> String {
        self.artifact_path(space, digest).to_string()
    }

    fn artifact_path(&self, space: &str, digest: &Digest) -> ObjectPath {
        self.path(&format!("artifacts/{space}/{digest}.cwasm"))
    }

    /// A shared compiled artifact's sealed bytes (at most `max_bytes`), or `None`
    /// when there is none. Nothing here is trusted: the caller opens the seal.
    pub(crate) async fn fetch_artifact(
        &self,
        space: &str,
        digest: &Digest,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let path = self.artifact_path(space, digest);
        let got = match self.objects.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.backend(e)),
        };
        let too_large = || {
            Error::InvalidInput(format!(
                "the shared artifact {path} is larger than {max_bytes} bytes; it was not read"
            ))
        };
        self.read_capped(got, max_bytes, too_large, |_| {})
            .await
            .map(Some)
    }

    /// Writes a shared compiled artifact: only where there is none, or, with
    /// `replace`, over one that did not verify.
    pub(crate) async fn publish_artifact(
        &self,
        space: &str,
        digest: &Digest,
        sealed: Vec<u8>,
        replace: bool,
    ) -> Result<(), Error> {
        let path = self.artifact_path(space, digest);
        let mode = if replace {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .objects
            .put_opts(&path, PutPayload::from(sealed), options)
            .await
        {
            Ok(_)
            | Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(()),
            Err(e) => Err(self.backend(e)),
        }
    }

    /// The object for `digest` of one kind, or `None` when there is none.
    async fn get(
        &self,
        digest: &Digest,
        kind: SourceKind,
    ) -> Result<Option<(ObjectPath, GetResult)>, Error> {
        let path = self.object(digest, kind);
        match self.objects.get(&path).await {
            Ok(got) => Ok(Some((path, got))),
            // S3 answers 404 for a missing bucket too; that is a broken store, not a
            // missing component.
            Err(e @ object_store::Error::NotFound { .. }) if mentions(&e, "NoSuchBucket") => {
                Err(self.backend(format!("the bucket does not exist: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend(e)),
        }
    }

    /// Every component and script in the store, with its size in bytes, ordered by
    /// digest.
    /// Objects whose names are not a digest are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store cannot be listed.
    pub async fn list(&self) -> Result<Vec<(Digest, u64)>, Error> {
        let prefix = self.path("sha256");
        let objects: Vec<_> = self
            .objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.backend(e))?;
        let mut found: Vec<(Digest, u64)> = objects
            .iter()
            .filter_map(|meta| {
                let file = meta.location.filename()?;
                let name = file
                    .strip_suffix(".wasm")
                    .or_else(|| file.strip_suffix(".js"))?;
                Some((Digest::parse(name).ok()?, meta.size))
            })
            .collect();
        found.sort();
        Ok(found)
    }
}

/// Whether an error or any of its sources says `what`.
fn mentions(error: &(dyn std::error::Error + 'static), what: &str) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.to_string().contains(what) {
            return true;
        }
        next = e.source();
    }
    false
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Where a local path argument points, for a `file://` URL.
pub fn file_url(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
    format!("file://{}", absolute.display())
}

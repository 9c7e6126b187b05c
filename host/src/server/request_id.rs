//! Request ids: the one a client (or a proxy in front) sends in `x-request-id`, or
//! one made up here. It is echoed in the answer, carried by every log line of the
//! request, and written into error bodies, so one id finds a request everywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Response};

/// The header a request's id travels in, both ways.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a client; a longer one is replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request the current task is handling.
    static CURRENT: Arc<str>;
}

/// Makes request ids: a random per-process prefix and a counter, so ids from the
/// nodes of a cluster do not collide and need no syscall per request.
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        let mut prefix = [0u8; 8];
        // Without randomness, ids are still unique within this process.
        let _ = getrandom::fill(&mut prefix);
        RequestIds {
            prefix: u64::from_le_bytes(prefix),
            next: AtomicU64::new(1),
        }
    }

    /// The id of a request with `headers`: the client's, when it sent a usable one
    /// (at most 128 characters of letters, digits and `-_.:/+=@`, so it is safe in
    /// any log format), else a new one.
    pub(crate) fn for_request(&self, headers: &HeaderMap) -> Arc<str> {
        if let Some(id) = headers.get(&HEADER).and_then(|v| v.to_str().ok())
            && usable(id)
        {
            return Arc::from(id);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{:016x}-{n:08x}", self.prefix))
    }
}

fn usable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// Runs `future` as the handling of request `id`: see [`current`].
pub(crate) async fn scope<F: Future>(id: Arc<str>, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// The id of the request this task is handling, if it is handling one.
pub(crate) fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Puts `id` on `response`, unless the answer (an HTTP guest's) already carries an
/// id of its own.
pub(crate) fn echo<B>(response: &mut Response<B>, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().entry(HEADER).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(id).expect("a header value"));
        headers
    }

    #[test]
    fn a_clients_id_is_kept_when_it_is_safe_to_log() {
        let ids = RequestIds::new();
        assert_eq!(&*ids.for_request(&with(b"abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in [
            &b"two words"[..],
            b"quote\"d",
            b"line\\nbreak",
            b"caf\xc3\xa9",
            &[b'a'; MAX_LEN + 1],
        ] {
            let made = ids.for_request(&with(bad));
            assert_ne!(made.as_bytes(), bad);
            assert!(usable(&made), "{made}");
        }
    }

    #[test]
    fn made_up_ids_differ() {
        let ids = RequestIds::new();
        let empty = HeaderMap::new();
        assert_ne!(ids.for_request(&empty), ids.for_request(&empty));
    }
}

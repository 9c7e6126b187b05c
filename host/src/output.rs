//! Guest standard output and error: a bounded capture for sealed calls, a capped
//! pass-through for `burncache run`, and a bounded log for HTTP guests.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Keeps the first `capacity` bytes a guest writes and silently drops the rest.
///
/// Used for the stderr of sealed calls, so that a trap can be reported with the panic
/// message the guest printed, while a chatty guest can never make the host buffer
/// without bound.
#[derive(Clone)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    capacity: usize,
}

impl Capture {
    pub(crate) fn new(capacity: usize) -> Capture {
        Capture {
            buffer: Arc::default(),
            capacity,
        }
    }

    /// What was captured, as text (lossily), trimmed.
    pub(crate) fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buffer).trim().to_string()
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.capacity.saturating_sub(buffer.len());
        buffer.extend_from_slice(&buf[..buf.len().min(room)]);
        // Report everything as written: dropping the excess is the point.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The byte budget that a command's stdout and stderr share, and whether it ran out.
#[derive(Clone)]
pub(crate) struct OutputBudget {
    left: Arc<AtomicU64>,
    exceeded: Arc<AtomicBool>,
}

impl OutputBudget {
    pub(crate) fn new(bytes: u64) -> OutputBudget {
        OutputBudget {
            left: Arc::new(AtomicU64::new(bytes)),
            exceeded: Arc::default(),
        }
    }

    /// Whether a write was refused because the budget ran out.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes from the budget, or marks it exceeded and refuses.
    fn take(&self, n: usize) -> bool {
        let n = n as u64;
        let taken = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            });
        if taken.is_err() {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        taken.is_ok()
    }
}

/// Passes a guest's output through to one of the host's own streams, until the shared
/// [`OutputBudget`] runs out; then every write fails.
pub(crate) struct PassThrough<W> {
    make: fn() -> W,
    budget: OutputBudget,
}

impl<W> PassThrough<W> {
    pub(crate) fn new(make: fn() -> W, budget: OutputBudget) -> Self {
        PassThrough { make, budget }
    }
}

impl<W: AsyncWrite + Send + Sync + Unpin + 'static> IsTerminal for PassThrough<W> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<W: AsyncWrite + Send + Sync + Unpin + 'static> StdoutStream for PassThrough<W> {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Capped {
            inner: (self.make)(),
            budget: self.budget.clone(),
        })
    }
}

struct Capped<W> {
    inner: W,
    budget: OutputBudget,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Capped<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.budget.take(buf.len()) {
            return Poll::Ready(Err(io::Error::other("the output ceiling was reached")));
        }
        // A short write returns budget that was taken but not used; it is not given
        // back, which errs on the side of stopping a noisy guest early.
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sends what a guest writes to the log, one event per line, tagged with the request
/// it served. One call's stdout and stderr share one [`GUEST_LOG_LIMIT`]-byte budget,
/// however many times the guest asks for the streams anew, so that no guest can
/// flood the log.
#[derive(Clone)]
pub(crate) struct GuestLog {
    request_id: Arc<str>,
    stream: &'static str,
    /// Bytes of the call's budget not yet logged, shared by both streams.
    left: Arc<AtomicU64>,
}

/// How much of one call's guest output (stdout and stderr together) reaches the log.
pub(crate) const GUEST_LOG_LIMIT: u64 = 32 * 1024;

/// What each logged line costs the budget besides its text: a log event carries a
/// timestamp, target and fields, so a guest writing empty lines cannot make the
/// log hundreds of times larger than its budget.
const LINE_COST: u64 = 128;

impl GuestLog {
    /// The call's stdout and stderr, sharing one budget.
    pub(crate) fn pair(request_id: &str) -> (GuestLog, GuestLog) {
        let left = Arc::new(AtomicU64::new(GUEST_LOG_LIMIT));
        let request_id: Arc<str> = Arc::from(request_id);
        let stdout = GuestLog {
            request_id: request_id.clone(),
            stream: "stdout",
            left: left.clone(),
        };
        let stderr = GuestLog {
            request_id,
            stream: "stderr",
            left,
        };
        (stdout, stderr)
    }

    /// Takes up to `n` bytes from the budget; returns how many were granted, and
    /// whether this take is the one that ran the budget dry.
    fn take(&self, n: usize) -> (usize, bool) {
        let n = n as u64;
        let before = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left.saturating_sub(n))
            })
            .unwrap_or(0);
        let granted = before.min(n);
        (granted as usize, before > 0 && before <= n)
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.left.load(Ordering::Relaxed) == 0 {
            return Poll::Ready(Ok(buf.len()));
        }
        let text = String::from_utf8_lossy(buf);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (granted, ran_dry) = self.take(line.len() + LINE_COST as usize);
            if granted > LINE_COST as usize {
                let end = line.floor_char_boundary(granted - LINE_COST as usize);
                tracing::info!(target: "burncache::guest", request_id = &*self.request_id, stream = self.stream, "{}", &line[..end]);
            }
            if ran_dry {
                tracing::warn!(
                    target: "burncache::guest",
                    request_id = &*self.request_id,
                    "the guest wrote more than {GUEST_LOG_LIMIT} bytes of output; the rest is dropped"
                );
            }
            if granted == 0 {
                break;
            }
        }
        // Report everything as written: dropping the excess is the point.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn capture_keeps_a_bounded_prefix() {
        let capture = Capture::new(5);
        let mut w = Box::into_pin(capture.async_stream());
        w.write_all(b"hello world").await.expect("write");
        assert_eq!(capture.text(), "hello");
    }

    #[tokio::test]
    async fn guest_log_streams_share_one_budget_however_often_they_are_opened() {
        let (stdout, stderr) = GuestLog::pair("req-7");
        let line = vec![b'x'; 1000];
        for _ in 0..100 {
            let mut w = Box::into_pin(stderr.async_stream());
            w.write_all(&line).await.expect("write");
            let mut w = Box::into_pin(stdout.async_stream());
            w.write_all(&line).await.expect("write");
        }
        assert_eq!(stderr.left.load(Ordering::Relaxed), 0);
        assert_eq!(stderr.take(1), (0, false), "nothing left for anyone");
    }

    #[tokio::test]
    async fn pass_through_stops_at_the_budget() {
        let budget = OutputBudget::new(4);
        let out = PassThrough::new(tokio::io::sink, budget.clone());
        let mut w = Box::into_pin(out.async_stream());
        w.write_all(b"abc").await.expect("within budget");
        assert!(!budget.exceeded());
        assert!(w.write_all(b"de").await.is_err());
        assert!(budget.exceeded());
    }
}

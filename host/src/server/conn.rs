//! What one client may hold of the server, and how long it may keep a response
//! waiting: the per-address shares of slots and connections, and the send deadline
//! on every connection.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How many of something (in-flight slots, open connections) each client address
/// holds, each at most `cap`.
pub(crate) struct Shares {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    cap: usize,
}

/// One of a client's shares, given back when dropped.
pub(crate) struct Share {
    client: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Shares {
    pub(crate) fn new(cap: usize) -> Shares {
        Shares {
            held: Arc::default(),
            cap: cap.max(1),
        }
    }

    /// The most one address may hold.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// One more share for `client`; `None` when it already holds its cap.
    pub(crate) fn take(&self, client: IpAddr) -> Option<Share> {
        let client = client_of(client);
        let mut held = lock(&self.held);
        let count = held.entry(client).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Share {
            client,
            held: self.held.clone(),
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Who an address belongs to, for the shares: an IPv4 address as itself (also when
/// it arrives IPv4-mapped on an IPv6 socket), an IPv6 address as its /64, since one
/// host is commonly given a whole /64 to pick addresses from.
fn client_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from_bits(
            v6.to_bits() & !u128::from(u64::MAX),
        )),
    }
}

/// The map is never left half-updated by a panic, so a poisoned lock is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection whose writes fail with `TimedOut` once the client has not taken a
/// byte for `limit`: a client that asks for a large answer and never reads it
/// cannot keep the connection (and the answer buffered for it) forever. Time spent
/// waiting for the answer itself (a guest still computing) does not count; only
/// time the client's socket stays full.
pub(crate) struct SendDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> SendDeadline<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> SendDeadline<S> {
        SendDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes on a write's result; while the socket stays full, the deadline runs.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing of the answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_capped_per_address_and_given_back() {
        let shares = Shares::new(2);
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        let first = shares.take(a).expect("first");
        let _second = shares.take(a).expect("second");
        assert!(shares.take(a).is_none(), "a third for the same address");
        assert!(shares.take(b).is_some(), "another address has its own");
        drop(first);
        assert!(shares.take(a).is_some(), "given back on drop");
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64_and_mapped_ipv4_is_ipv4() {
        let shares = Shares::new(1);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let same_net: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let other_net: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        let _held = shares.take(one).expect("first");
        assert!(shares.take(same_net).is_none(), "the same /64");
        assert!(shares.take(other_net).is_some(), "another /64");
        let v4: IpAddr = "192.0.2.7".parse().expect("v4");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("mapped");
        let _v4 = shares.take(v4).expect("v4");
        assert!(shares.take(mapped).is_none(), "the same IPv4 host");
    }
}

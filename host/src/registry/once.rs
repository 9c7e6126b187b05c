//! A value made at most once at a time, by a task of its own: the shape of every
//! "compile once" in the registry (a component's compile, a script's check, the
//! JavaScript runtime's preparation).
//!
//! The first caller starts the work in a spawned task; later callers join that same
//! attempt. The task runs to its end whatever its callers do, so a caller that hangs
//! up never leaves the work half-done for the next one to start again. An outcome the
//! work says to keep is kept for good; one it does not (the node's trouble, a budget
//! too small) is handed to the caller that started that attempt; a caller that only
//! joined it starts one attempt of its own instead, and so does the next caller to
//! come. Callers that have gone start nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::Error;

/// What an attempt produced: the outcome, whether to keep it, and the fuel it burned
/// on its starter's budget.
pub(crate) struct Made<T> {
    pub(crate) outcome: Result<T, Error>,
    pub(crate) keep: bool,
    pub(crate) fuel_burned: u64,
}

/// An attempt under way: its number, and its outcome to share (the outcome, the fuel
/// it burned, whether it was kept).
type Attempt<T> = (
    u64,
    Shared<BoxFuture<'static, (Result<T, Error>, u64, bool)>>,
);

pub(crate) struct Once<T> {
    kept: OnceLock<Result<T, Error>>,
    attempt: Mutex<Option<Attempt<T>>>,
    attempts: AtomicU64,
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Once {
            kept: OnceLock::new(),
            attempt: Mutex::new(None),
            attempts: AtomicU64::new(0),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Once<T> {
    /// The kept outcome, if there is one.
    pub(crate) fn get(&self) -> Option<&Result<T, Error>> {
        self.kept.get()
    }

    /// Whether an attempt is under way.
    pub(crate) fn is_running(&self) -> bool {
        lock(&self.attempt).is_some()
    }

    /// The kept outcome, or the outcome of the attempt under way (joined), or of a
    /// new attempt that `make` starts. Returns the fuel the attempt burned if this
    /// caller started it, else 0.
    pub(crate) async fn get_or_make<F>(
        this: &Arc<Self>,
        make: impl Fn() -> F,
    ) -> (Result<T, Error>, u64)
    where
        F: Future<Output = Made<T>> + Send + 'static,
    {
        loop {
            let ((_, attempt), started) = {
                let mut attempt = lock(&this.attempt);
                // Under the lock: an attempt keeps its outcome before it clears
                // itself.
                if let Some(kept) = this.kept.get() {
                    return (kept.clone(), 0);
                }
                match &*attempt {
                    Some(under_way) => (under_way.clone(), false),
                    None => {
                        let started = Self::start(this, make());
                        *attempt = Some(started.clone());
                        (started, true)
                    }
                }
            };
            let (outcome, fuel_burned, kept) = attempt.await;
            if started {
                return (outcome, fuel_burned);
            }
            if kept {
                return (outcome, 0);
            }
            // Another caller's attempt that was not kept (the node was busy, or
            // the attempt ran on that caller's budget): this caller's own try.
        }
    }

    fn start<F>(this: &Arc<Self>, work: F) -> Attempt<T>
    where
        F: Future<Output = Made<T>> + Send + 'static,
    {
        let number = this.attempts.fetch_add(1, Ordering::Relaxed);
        let once = this.clone();
        let task = tokio::spawn(async move {
            // Cleared however the task ends, a panic included, so that a later
            // caller can start again.
            let _clear = Clear(once.clone(), number);
            let made = work.await;
            if made.keep {
                let _ = once.kept.set(made.outcome.clone());
            }
            (made.outcome, made.fuel_burned, made.keep)
        });
        let once = this.clone();
        let shared = async move {
            task.await.unwrap_or_else(|e| {
                // A task cancelled before it ran never cleared its attempt.
                Clear(once, number).clear();
                (
                    Err(Error::Backend(format!("the preparing task failed: {e}"))),
                    0,
                    false,
                )
            })
        }
        .boxed()
        .shared();
        (number, shared)
    }
}

/// Clears a [`Once`]'s attempt number `.1`, if it is still the one under way, when
/// its task ends.
struct Clear<T>(Arc<Once<T>>, u64);

impl<T> Clear<T> {
    fn clear(self) {}
}

impl<T> Drop for Clear<T> {
    fn drop(&mut self) {
        let mut attempt = lock(&self.0.attempt);
        if attempt
            .as_ref()
            .is_some_and(|(number, _)| *number == self.1)
        {
            *attempt = None;
        }
    }
}

/// The lock is never held across anything that can panic half-way through an update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn an_attempt_whose_callers_all_left_finishes_and_is_kept() {
        let once: Arc<Once<u32>> = Arc::default();
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let caller = {
            let once = once.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                let rx = Arc::new(Mutex::new(Some(rx)));
                Once::get_or_make(&once, move || {
                    let runs = runs.clone();
                    let rx = lock(&rx).take();
                    async move {
                        runs.fetch_add(1, Ordering::Relaxed);
                        if let Some(rx) = rx {
                            let _ = rx.await;
                        }
                        Made {
                            outcome: Ok(7),
                            keep: true,
                            fuel_burned: 0,
                        }
                    }
                })
                .await
            })
        };
        while runs.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        caller.abort();
        let _ = caller.await;
        let _ = tx.send(());
        let (value, _) = Once::get_or_make(&once, || async {
            Made {
                outcome: Ok(99),
                keep: true,
                fuel_burned: 0,
            }
        })
        .await;
        assert_eq!(value, Ok(7));
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_outcome_not_kept_is_tried_again_by_the_next_caller() {
        let once: Arc<Once<u32>> = Arc::default();
        let (first, fuel) = Once::get_or_make(&once, || async {
            Made {
                outcome: Err(Error::Backend("busy".into())),
                keep: false,
                fuel_burned: 5,
            }
        })
        .await;
        assert!(first.is_err());
        assert_eq!(fuel, 5);
        let (second, _) = Once::get_or_make(&once, || async {
            Made {
                outcome: Ok(1),
                keep: true,
                fuel_burned: 0,
            }
        })
        .await;
        assert_eq!(second, Ok(1));
        assert_eq!(once.get(), Some(&Ok(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_joined_an_attempt_not_kept_tries_on_its_own() {
        let once: Arc<Once<u32>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let first = {
            let once = once.clone();
            tokio::spawn(async move {
                Once::get_or_make(&once, move || {
                    let rx = lock(&rx).take();
                    async move {
                        if let Some(rx) = rx {
                            let _ = rx.await;
                        }
                        Made {
                            outcome: Err(Error::FuelExhausted),
                            keep: false,
                            fuel_burned: 3,
                        }
                    }
                })
                .await
            })
        };
        while lock(&once.attempt).is_none() {
            tokio::task::yield_now().await;
        }
        let joined = {
            let once = once.clone();
            tokio::spawn(async move {
                Once::get_or_make(&once, || async {
                    Made {
                        outcome: Ok(2),
                        keep: true,
                        fuel_burned: 0,
                    }
                })
                .await
            })
        };
        let _ = tx.send(());
        assert_eq!(first.await.expect("first"), (Err(Error::FuelExhausted), 3));
        assert_eq!(joined.await.expect("joined"), (Ok(2), 0));
    }
}

//! A value made at most once at a time, by a task of its own: the shape of every
//! "compile once" in the registry (a component's compile, a script's check, the
//! JavaScript runtime's preparation).
//!
//! The first caller starts the work in a spawned task; later callers join that same
//! attempt. The task runs to its end whatever its callers do, so a caller that hangs
//! up never leaves the work half-done for the next one to start again. An outcome the
//! work says to keep is kept for good; one it does not (the node's trouble, a budget
//! too small) is handed to the callers waiting for that attempt, and the next caller
//! to come starts a new attempt. Callers that have gone start nothing.

use std::future::Future;
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

type Attempt<T> = Shared<BoxFuture<'static, (Result<T, Error>, u64)>>;

pub(crate) struct Once<T> {
    kept: OnceLock<Result<T, Error>>,
    attempt: Mutex<Option<Attempt<T>>>,
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Once {
            kept: OnceLock::new(),
            attempt: Mutex::new(None),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Once<T> {
    /// The kept outcome, if there is one.
    pub(crate) fn get(&self) -> Option<&Result<T, Error>> {
        self.kept.get()
    }

    /// The kept outcome, or the outcome of the attempt under way (joined), or of a
    /// new attempt that `make` starts. Returns the fuel the attempt burned if this
    /// caller started it, else 0.
    pub(crate) async fn get_or_make<F>(
        this: &Arc<Self>,
        make: impl FnOnce() -> F,
    ) -> (Result<T, Error>, u64)
    where
        F: Future<Output = Made<T>> + Send + 'static,
    {
        let (attempt, started) = {
            let mut attempt = lock(&this.attempt);
            // Under the lock: an attempt keeps its outcome before it clears itself.
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
        let (outcome, fuel_burned) = attempt.await;
        (outcome, if started { fuel_burned } else { 0 })
    }

    fn start<F>(this: &Arc<Self>, work: F) -> Attempt<T>
    where
        F: Future<Output = Made<T>> + Send + 'static,
    {
        let once = this.clone();
        let task = tokio::spawn(async move {
            // Cleared however the task ends, a panic included, so that a later
            // caller can start again.
            let _clear = Clear(once.clone());
            let made = work.await;
            if made.keep {
                let _ = once.kept.set(made.outcome.clone());
            }
            (made.outcome, made.fuel_burned)
        });
        async move {
            task.await.unwrap_or_else(|e| {
                (
                    Err(Error::Backend(format!("the preparing task failed: {e}"))),
                    0,
                )
            })
        }
        .boxed()
        .shared()
    }
}

/// Clears a [`Once`]'s attempt when its task ends.
struct Clear<T>(Arc<Once<T>>);

impl<T> Drop for Clear<T> {
    fn drop(&mut self) {
        *lock(&self.0.attempt) = None;
    }
}

/// The lock is never held across anything that can panic half-way through an update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn an_attempt_whose_callers_all_left_finishes_and_is_kept() {
        let once: Arc<Once<u32>> = Arc::default();
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let caller = {
            let once = once.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                Once::get_or_make(&once, move || async move {
                    runs.fetch_add(1, Ordering::Relaxed);
                    let _ = rx.await;
                    Made {
                        outcome: Ok(7),
                        keep: true,
                        fuel_burned: 0,
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
}

//! Waiting for events, not for time. A test that needs something to have happened (a server to
//! listen, a log line, a counter to move, a socket to close) polls that observable condition with
//! [`wait_for`] or [`wait_until`]: bounded, and on running out it panics naming what it waited for
//! and what it saw last. `tokio::time::sleep` in a test is left only where time passing is the
//! point (a token that must expire, a client that sends slowly, an upstream that answers late),
//! each with a comment saying so.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Ok`, for at most `within`. `Err` carries what the probe saw,
/// reported (with `what`) if the time runs out.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` until it is true, for at most `within`; panics naming `what` otherwise.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let f = cond();
        async move {
            if f.await {
                Ok(())
            } else {
                Err("the condition was still false".to_string())
            }
        }
    })
    .await
}

//! `/vitals.json` for many readers: at most one render at a time, run off the async workers,
//! its body shared by every request that arrives while it runs and for [`REUSE`] after it.
//!
//! A snapshot of a route-capped service is megabytes of JSON and milliseconds of work; on an
//! async worker each one would stall the app's requests that worker serves, and a hundred
//! readers would render a hundred copies. Here they wait (as futures, holding no thread) for the
//! one render, and share its bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::recorder::Inner;

/// How long a rendered body answers new requests: the page refreshes every 2 s, so readers
/// see data at most this old.
pub(crate) const REUSE: Duration = Duration::from_secs(1);

/// The last body, and the render in progress (if any) with the requests waiting for it.
#[derive(Default)]
pub(crate) struct SharedJson {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last rendered body and when its render finished.
    body: Option<(Instant, Bytes)>,
    rendering: bool,
    waiters: Vec<Waker>,
    /// Renders run since start (tests read it).
    renders: u64,
}

impl SharedJson {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renders run since start.
    #[cfg(test)]
    pub(crate) fn renders(&self) -> u64 {
        self.state().renders
    }
}

/// The body of `/vitals.json` for a request that arrived at `arrived`: a body whose render
/// finished at most [`REUSE`] before it arrived (or after), else the next render's.
pub(crate) struct JsonBody {
    inner: Arc<Inner>,
    arrived: Instant,
}

impl JsonBody {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        JsonBody { inner, arrived: Instant::now() }
    }
}

impl Future for JsonBody {
    type Output = Bytes;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Bytes> {
        let this = self.get_mut();
        let mut state = this.inner.json.state();
        if let Some((at, body)) = &state.body {
            if *at + REUSE >= this.arrived {
                return Poll::Ready(body.clone());
            }
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        if !state.rendering {
            state.rendering = true;
            drop(state);
            spawn(Render { inner: Arc::clone(&this.inner) });
        }
        Poll::Pending
    }
}

/// The one render in progress. Dropped (run or not, finished or unwinding), it lets the next
/// request start a render and wakes the waiting ones.
struct Render {
    inner: Arc<Inner>,
}

impl Render {
    fn run(self) {
        let body = Bytes::from(super::json::render(&super::snapshot::take(&self.inner)));
        let mut state = self.inner.json.state();
        state.body = Some((Instant::now(), body));
        state.renders += 1;
    }
}

impl Drop for Render {
    fn drop(&mut self) {
        let waiters = {
            let mut state = self.inner.json.state();
            state.rendering = false;
            std::mem::take(&mut state.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// Runs `render` off the async workers: on tokio's blocking pool inside a tokio runtime, else
/// on a thread of its own. If no thread can be had, the render is dropped unrun (its waiters
/// are woken and the next poll tries again).
fn spawn(render: Render) {
    #[cfg(feature = "prometheus")]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn_blocking(move || render.run()));
        return;
    }
    let _ = std::thread::Builder::new()
        .name("tower-vitals-live-render".into())
        .spawn(move || render.run());
}

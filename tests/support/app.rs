//! A known axum app for exporter tests, served from a thread of its own with its own local
//! recorder (so apps with different recorders can share one test binary), and its traffic.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use metrics::Recorder;
use tower_vitals::{RouteName, VitalsLayer};

use super::components::http_get;

/// A route name no router would produce: every statsd separator, a newline, a quote and a
/// backslash.
pub const HOSTILE: &str = "/a|b,c#d:e\n\"q\\";

/// The tag value the layer sends for [`HOSTILE`] (whatever the crate's sanitising keeps).
pub fn hostile_tag() -> String {
    let value = tower_vitals::labels::sanitize_tag_value(HOSTILE);
    assert!(
        value.starts_with("/a_b_c_d:e_") && !value.contains(['|', ',', '#', '\n']),
        "{value:?}"
    );
    value
}
pub const USERS: usize = 30;
pub const BIG: usize = 5;
pub const CHUNK: usize = 10_000;
pub const CHUNKS: usize = 4;
pub const USER_BODY: &str = "user";

pub fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { USER_BODY }))
        .route(
            "/big",
            get(|| async {
                let chunks =
                    (0..CHUNKS).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; CHUNK])));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/hostile",
            get(|| async {
                let mut response = axum::response::Response::new(Body::from("h"));
                response.extensions_mut().insert(RouteName::new(HOSTILE));
                response
            }),
        )
        .layer(VitalsLayer::new())
}

/// Serves `router` on 127.0.0.1 from a runtime of `workers` threads on a thread of its own,
/// for the rest of the test binary; returns its address once it accepts.
pub fn serve_detached(router: Router, workers: usize) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
            tx.send(listener.local_addr().expect("addr")).expect("send addr");
            axum::serve(listener, router).await.expect("serve");
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("app started")
}

/// The app served on 127.0.0.1 by a thread of its own, whose local recorder is `recorder`
/// (so several apps with different recorders can run in one test binary). Dropping it stops the
/// server and drops the recorder (the statsd sender then flushes what is left and exits).
pub struct AppThread {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AppThread {
    pub fn start<R: Recorder + Send + 'static>(recorder: R) -> AppThread {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _local = metrics::set_default_local_recorder(&recorder);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                axum::serve(listener, app())
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("app started");
        AppThread { addr, stop: Some(stop), thread: Some(thread) }
    }

    pub fn get(&self, path: &str) -> (u16, usize) {
        let (status, body) = http_get(self.addr, path).expect("GET");
        (status, body.len())
    }

    /// Sends the known traffic (returns nothing: asserts every answer): USERS small responses, BIG streamed ones, one hostile route.
    pub fn known_traffic(&self) {
        for id in 0..USERS {
            assert_eq!(self.get(&format!("/users/{id}")), (200, USER_BODY.len()));
        }
        for _ in 0..BIG {
            assert_eq!(self.get("/big"), (200, CHUNK * CHUNKS));
        }
        assert_eq!(self.get("/hostile").0, 200);
    }
}

impl Drop for AppThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

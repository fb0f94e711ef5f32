//! The small-block warning: one `tracing` warning per route, rate limited, for responses cut into
//! tiny frames; none for well-sized frames. Events are captured by a minimal subscriber.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower::{Layer, ServiceExt};
use tower_vitals::{RouteName, SmallBlockWarning, VitalsLayer, VitalsLayerBuilder};

/// 8 KiB of zeros, sliced for every frame (no allocation per frame).
static ZEROS: [u8; 8192] = [0; 8192];

/// A body of `total` bytes in frames of `block` bytes (the last one shorter).
struct Blocks {
    left: usize,
    block: usize,
}

impl Body for Blocks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.block.min(self.left).min(ZEROS.len());
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }
}

/// One warning as captured: its fields by name (the message under `message`).
type Event = BTreeMap<String, String>;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields<'a>(&'a mut Event);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut fields = Event::new();
        fields.insert("level".into(), meta.level().to_string());
        fields.insert("target".into(), meta.target().to_owned());
        event.record(&mut Fields(&mut fields));
        self.0.lock().expect("capture lock").push(fields);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().expect("capture lock"))
    }
}

/// Sends `responses` responses of `total` bytes in `block`-byte frames through `layer`, on route
/// `route`, each drained to its end.
fn serve(layer: &VitalsLayer, route: &'static str, responses: usize, total: usize, block: usize) {
    let svc = layer.layer(tower::service_fn(move |_: Request<String>| async move {
        Ok::<_, std::convert::Infallible>(Response::new(Blocks { left: total, block }))
    }));
    for _ in 0..responses {
        let mut req = Request::new(String::new());
        req.extensions_mut().insert(RouteName::new(route));
        let res = futures_util::FutureExt::now_or_never(svc.clone().oneshot(req))
            .expect("ready at once")
            .expect("response");
        let mut body = res.into_body();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut frames = 0usize;
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            frame.expect("frame");
            frames += 1;
            assert!(frames <= total + 1, "body does not end");
        }
    }
}

/// A layer builder on a mock clock (for the rate limit) with a no-op metrics recorder.
fn mock_layer() -> (VitalsLayerBuilder, tower_vitals::MockClock) {
    let (clock, mock) = tower_vitals::Clock::mock();
    (VitalsLayer::builder().clock(clock), mock)
}

const ONE_MB: usize = 1_000_000;

#[test]
fn one_megabyte_in_one_byte_blocks_warns_once_per_route() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let (builder, mock) = mock_layer();
        let layer = builder.build();
        serve(&layer, "/download/{file}", 1, ONE_MB, 1);
        let events = capture.take();
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = &events[0];
        assert_eq!(e["level"], "WARN");
        assert_eq!(e["target"], "tower_vitals::small_blocks");
        assert_eq!(e["route"], "/download/{file}");
        assert_eq!(e["blocks"], "1000000");
        assert_eq!(e["bytes"], "1000000");
        assert_eq!(e["average_bytes_per_block"], "1");
        assert_eq!(e["min_average_bytes"], "512");
        assert!(e["message"].contains("/download/{file}"), "{}", e["message"]);
        assert!(e["message"].contains("average 1 bytes per block"), "{}", e["message"]);

        // The same pattern again within the hour: no second warning (never one per request).
        serve(&layer, "/download/{file}", 3, ONE_MB, 1);
        assert!(capture.take().is_empty(), "rate limited");

        // Another route has its own limit.
        serve(&layer, "/stream", 1, ONE_MB, 1);
        let events = capture.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["route"], "/stream");

        // An hour later the first route may warn again.
        mock.advance(Duration::from_secs(3600));
        serve(&layer, "/download/{file}", 1, ONE_MB, 1);
        assert_eq!(capture.take().len(), 1);
    });
}

#[test]
fn one_megabyte_in_8k_blocks_never_warns() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let layer = mock_layer().0.build();
        // 100 responses of 1 MB in 8 KiB frames: 12 300 blocks, judged twice (each 4096+).
        serve(&layer, "/download/{file}", 100, ONE_MB, 8192);
        assert!(capture.take().is_empty());

        // The same traffic is judged, and would warn with a higher threshold: the test can fail.
        let strict = SmallBlockWarning::default().min_average_bytes(16 * 1024);
        let layer = mock_layer().0.small_block_warning(strict).build();
        serve(&layer, "/download/{file}", 100, ONE_MB, 8192);
        let events = capture.take();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["average_bytes_per_block"], "8130", "1 MB / 123 frames");
    });
}

#[test]
fn small_single_block_responses_never_warn() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let layer = mock_layer().0.build();
        serve(&layer, "/users/{id}", 10_000, 40, 40); // 10 000 small JSON-like answers
        assert!(capture.take().is_empty());
    });
}

#[test]
fn the_warning_can_be_tuned_and_turned_off() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        let (builder, _mock) = mock_layer();
        let off = builder.clone().without_small_block_warning().build();
        serve(&off, "/tiny", 1, ONE_MB, 1);
        assert!(capture.take().is_empty());

        // Fewer blocks needed to judge: 2 responses of 100 bytes in 10-byte frames.
        let quick =
            builder.small_block_warning(SmallBlockWarning::default().min_blocks(20)).build();
        serve(&quick, "/tiny", 2, 100, 10);
        let events = capture.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["blocks"], "20");
        assert_eq!(events[0]["average_bytes_per_block"], "10");
    });
}

//! The demo gRPC service of `examples/tonic.rs` and `tests/layer/grpc.rs`: the code generated from
//! `demo.proto` (by `scripts/gen-proto.sh`) and a small implementation of it.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

include!("vitals.demo.rs");

/// Answers `Hello` (the names `missing` and `crash` fail with NOT_FOUND and INTERNAL) and
/// `Count` (a stream of `count` chunks of `size` bytes, at most 10 000 chunks of 1 MiB).
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoService;

#[tonic::async_trait]
impl demo_server::Demo for DemoService {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        match name.as_str() {
            "missing" => Err(Status::not_found("no greeting for `missing`")),
            "crash" => Err(Status::internal("the demo fails `crash` on purpose")),
            _ => Ok(Response::new(HelloReply { message: format!("hello {name}") })),
        }
    }

    type CountStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let CountRequest { count, size } = request.into_inner();
        let (count, size) = (count.min(10_000), size.min(1 << 20) as usize);
        let chunks = (0..count).map(move |index| Ok(Chunk { index, payload: vec![b'v'; size] }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// The bytes a `Chunk` takes on the wire: the 5-byte gRPC message prefix and its encoding.
pub fn chunk_wire_len(index: u32, size: usize) -> u64 {
    let chunk = Chunk { index, payload: vec![0; size] };
    5 + prost::Message::encoded_len(&chunk) as u64
}

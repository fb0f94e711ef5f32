#!/usr/bin/env bash
# Regenerates proto/vitals.demo.rs (the gRPC demo service of examples/tonic.rs and tests/layer/grpc.rs)
# from proto/demo.proto with tonic-prost-build and the protoc that protoc-bin-vendored ships.
# The generated file is committed, so the crate and its users never need protoc or a build script.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
mkdir -p "$gen/src"
cat > "$gen/Cargo.toml" <<'TOML'
[package]
name = "protogen"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
tonic-prost-build = "0.14"
protoc-bin-vendored = "3"
TOML
cat > "$gen/src/main.rs" <<'RS'
fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    std::env::set_var("PROTOC", protoc);
    let mut args = std::env::args().skip(1);
    let (proto_dir, out) = (args.next().expect("proto dir"), args.next().expect("out dir"));
    tonic_prost_build::configure()
        .out_dir(out)
        .compile_protos(&[format!("{proto_dir}/demo.proto")], &[proto_dir])
        .expect("compile demo.proto");
}
RS
cargo run --quiet --manifest-path "$gen/Cargo.toml" -- "$repo/proto" "$repo/proto"
echo "wrote $repo/proto/vitals.demo.rs"

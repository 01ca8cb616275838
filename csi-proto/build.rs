//! Compiles `proto/csi.proto` with protox (a protobuf compiler in Rust, so
//! no system `protoc` is needed) and generates prost messages plus tonic
//! clients and servers from the descriptors.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["proto"]).map_err(std::io::Error::other)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
}

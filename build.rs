//! Generates the gRPC service from `proto/` with a pure-Rust protobuf compiler (protox), so
//! no `protoc` is needed, and keeps the descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/floodgate/v1/compute.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("floodgate_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_transport(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

//! Compiles the vendored ONNX schema (proto2, current IR, official field numbers) into prost
//! types. `tract_onnx::pb` is generated from an old proto3 schema that drops newer fields and
//! loses presence, so a lossless read-write needs our own copy. No `protoc` needed: protox
//! is a .proto compiler written in Rust.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}

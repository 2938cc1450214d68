//! Compiles `proto/weft/v1/*.proto` with protox (pure Rust, no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/weft/v1/task.proto", "proto/weft/v1/control.proto"];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".weft.v1.Tensor.data")
        .bytes(".weft.v1.RunPartitionChunk.data")
        .bytes(".weft.v1.RunPartitionRequest.data")
        .bytes(".weft.v1.DeliverTensorsRequest.data")
        .bytes(".weft.v1.RegisterPartitionRequest.def")
        .bytes(".weft.v1.UploadChunk.data")
        .bytes(".weft.v1.LogChunk.data")
        .compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}

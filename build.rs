//! Compiles the gRPC contracts in proto/ with protox (no protoc needed) and
//! writes the descriptor set that gRPC reflection serves.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/sigil/v1/operator.proto",
    "proto/sigil/v1/entries.proto",
    "proto/sigil/v1/bundle.proto",
    "proto/sigil/v1/node.proto",
    "proto/sigil/v1/policy.proto",
    "proto/sigil/v1/audit.proto",
];

/// Messages that carry passphrases, keys or bearer tokens: their derived
/// `Debug` is skipped and a redacting one is written by hand in src/api/.
const REDACTED: &[&str] = &[
    ".sigil.v1.InitRequest",
    ".sigil.v1.UnsealRequest",
    ".sigil.v1.MintJwtSvidResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sigil_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_debug(REDACTED.iter().copied())
        .compile_fds(fds)?;
    Ok(())
}

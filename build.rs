//! Compiles the gRPC contracts in proto/ with protox (no protoc needed) and
//! writes the descriptor set that gRPC reflection serves.

use prost::Message;
use std::path::PathBuf;

/// The SPIFFE Workload API (no package) compiles on its own, so its
/// messages land in their own module.
const WORKLOAD_PROTO: &str = "proto/spiffe/workload.proto";

const PROTOS: &[&str] = &[
    "proto/sigil/v1/operator.proto",
    "proto/sigil/v1/entries.proto",
    "proto/sigil/v1/bundle.proto",
    "proto/sigil/v1/node.proto",
    "proto/sigil/v1/policy.proto",
    "proto/sigil/v1/audit.proto",
    "proto/sigil/v1/agents.proto",
    "proto/sigil/v1/secrets.proto",
    "proto/sigil/v1/auth.proto",
    "proto/sigil/v1/jit.proto",
    "proto/sigil/v1/quarantine.proto",
];

/// Messages that carry passphrases, keys or bearer tokens: their derived
/// `Debug` is skipped and a redacting one is written by hand in src/api/.
const REDACTED: &[&str] = &[
    ".sigil.v1.InitRequest",
    ".sigil.v1.UnsealRequest",
    ".sigil.v1.MintJwtSvidResponse",
    ".sigil.v1.CreateJoinTokenResponse",
    ".sigil.v1.AttestAgentRequest",
    ".sigil.v1.PutSecretRequest",
    ".sigil.v1.SecretVersion",
    ".sigil.v1.LoginOidcRequest",
    ".sigil.v1.IntrospectRequest",
    ".sigil.v1.LoginResponse",
    ".X509SVID",
    ".JWTSVID",
    ".ValidateJWTSVIDRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS.iter().chain([&WORKLOAD_PROTO]) {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(out.join("sigil_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_debug(REDACTED.iter().copied())
        .compile_fds(fds)?;

    // The Workload API has no package; prost names its output `_.rs`.
    let fds = protox::compile([WORKLOAD_PROTO], ["proto"])?;
    std::fs::write(out.join("workload_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_debug(REDACTED.iter().copied())
        .compile_fds(fds)?;
    Ok(())
}

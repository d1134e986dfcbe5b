//! A real `sigil server` for benchmarks that talk to one over the network:
//! started in a scratch directory with the shipped policy and the given
//! grants, initialized over the admin socket, killed when dropped.

use super::common::BenchResult;
use sigil::api::pb;
use sigil::cli::client::{Clients, Target};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");
pub const TRUST_DOMAIN: &str = "example.org";
const PATIENCE: Duration = Duration::from_secs(30);
pub const PASSPHRASE: &[u8] = b"bench passphrase, not a secret";

/// The server process; killed when dropped.
pub struct Server {
    child: Child,
    /// The gRPC port.
    pub port: u16,
}

impl Server {
    /// The server's process ID.
    #[allow(dead_code, reason = "not every benchmark reads it")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `path` as a TOML string.
pub fn toml_str(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// Writes a `sigil server` configuration in `dir`: the shipped policy with
/// `grants` as the policy data, an unseal passphrase file, a free port, and
/// `extra` appended to server.toml. Returns server.toml and the port.
pub fn configure(
    dir: &Path,
    grants: serde_json::Value,
    extra: &str,
) -> BenchResult<(std::path::PathBuf, u16)> {
    let port = free_port()?;
    let admin_socket = dir.join("admin.sock");
    let unseal = dir.join("unseal");
    std::fs::write(&unseal, PASSPHRASE)?;
    std::fs::set_permissions(&unseal, std::fs::Permissions::from_mode(0o600))?;
    let policies = dir.join("policies");
    std::fs::create_dir(&policies)?;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies/sigil.rego");
    std::fs::copy(shipped, policies.join("sigil.rego"))?;
    let grants = serde_json::json!({"sigil": {"grants": grants}});
    std::fs::write(policies.join("grants.json"), grants.to_string())?;
    let toml = dir.join("server.toml");
    std::fs::write(
        &toml,
        format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\ndata_dir = {}\nlisten = \"127.0.0.1:{port}\"\n\
             admin_socket = {}\n[unseal]\npassphrase_file = {}\n[policy]\ndir = {}\n{extra}",
            toml_str(&dir.join("server")),
            toml_str(&admin_socket),
            toml_str(&unseal),
            toml_str(&policies),
        ),
    )?;
    Ok((toml, port))
}

/// Starts `sigil server` in `dir` (configured by [`configure`]),
/// initializes it, and returns it with operator clients. Its log goes to
/// `$TMP/<log_name>`.
pub async fn start(
    dir: &Path,
    grants: serde_json::Value,
    extra: &str,
    log_name: &str,
) -> BenchResult<(Server, Clients)> {
    let (toml, port) = configure(dir, grants, extra)?;
    let admin_socket = dir.join("admin.sock");
    let child = Command::new(SIGIL)
        .args(["server", "--config"])
        .arg(&toml)
        .env("SIGIL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(std::env::temp_dir().join(log_name))?)
        .spawn()?;
    let server = Server { child, port };
    let target = Target::Admin(admin_socket);
    let start = Instant::now();
    let mut admin = loop {
        match Clients::connect(&target).await {
            Ok(c) => break c,
            Err(e) if start.elapsed() > PATIENCE => return Err(format!("admin socket: {e}").into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    admin
        .operator
        .init(pb::InitRequest {
            passphrase: PASSPHRASE.to_vec(),
        })
        .await?;
    Ok((server, admin))
}

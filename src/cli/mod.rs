//! The command line (SPEC §3.3): every admin, operator and workload command.
//! Output is human text by default and stable JSON with `--json`; failures
//! exit non-zero with a one-line reason on stderr.

mod agent;
mod agents;
mod audit_report;
pub mod client;
mod dev;
mod entry;
mod federation;
mod jit;
mod keys;
mod offline;
mod ops;
mod output;
mod quarantine;
mod secret;
mod token;
mod workload;

use clap::{Parser, Subcommand};
use client::Target;
use std::path::PathBuf;

/// sigil: workload identities and secrets, checked on every request.
#[derive(Debug, Parser)]
#[command(name = "sigil", version, about)]
pub struct Cli {
    /// Print stable JSON instead of human text.
    #[arg(long, global = true)]
    json: bool,
    /// The server's admin socket (identifies you by your uid).
    #[arg(long, global = true, env = "SIGIL_ADMIN_SOCKET")]
    admin_socket: Option<PathBuf>,
    /// The server's gRPC address, HOST:PORT (TLS 1.3).
    #[arg(long, global = true, env = "SIGIL_SERVER")]
    server: Option<String>,
    /// PEM trust bundle for --server.
    #[arg(long, global = true, env = "SIGIL_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Directory with svid.pem and key.pem to authenticate to --server with.
    #[arg(long, global = true, env = "SIGIL_SVID_DIR")]
    svid_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a development server with an embedded store (keys for development only).
    Dev(dev::DevArgs),
    /// Run the server.
    Server {
        /// server.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the node agent: the SPIFFE Workload API on a Unix socket.
    Agent {
        /// agent.toml
        #[arg(long)]
        config: PathBuf,
        /// File holding the one-time join token (mode 0600), or `-` to read
        /// it from standard input. Needed only when no valid agent SVID is
        /// stored. Otherwise $SIGIL_JOIN_TOKEN is used when set.
        #[arg(long, value_name = "FILE", conflicts_with = "join_token")]
        join_token_file: Option<PathBuf>,
        /// The join token itself. Every local user can read it in the
        /// process list: prefer --join-token-file or $SIGIL_JOIN_TOKEN.
        // A token is base64url: one in 64 begins with '-', which is still
        // the token's value here, not a flag.
        #[arg(long, value_name = "TOKEN", allow_hyphen_values = true)]
        join_token: Option<String>,
    },
    /// Initialize, unseal, seal and inspect the store.
    #[command(subcommand)]
    Operator(ops::OperatorCmd),
    /// Manage registration entries.
    #[command(subcommand)]
    Entry(entry::EntryCmd),
    /// Show the trust bundle; set, list and delete foreign trust domains' bundles.
    #[command(subcommand)]
    Bundle(federation::BundleCmd),
    /// Mint or fetch X.509-SVIDs.
    #[command(subcommand)]
    Svid(ops::SvidCmd),
    /// Mint, fetch and validate JWT-SVIDs.
    #[command(subcommand)]
    Jwt(ops::JwtCmd),
    /// Evaluate, test and reload policies.
    #[command(subcommand)]
    Policy(ops::PolicyCmd),
    /// Verify and read the audit log.
    #[command(subcommand)]
    Audit(ops::AuditCmd),
    /// Create join tokens for new agents.
    #[command(subcommand, name = "join-token")]
    JoinToken(agents::JoinTokenCmd),
    /// List and ban attested agents.
    #[command(subcommand, name = "agent-node")]
    AgentNode(agents::AgentNodeCmd),
    /// Versioned secrets: put, get, list, delete, destroy, watch, rotate.
    #[command(subcommand)]
    Secret(secret::SecretCmd),
    /// Trade a CI platform's OIDC JWT for a sigil token.
    #[command(subcommand)]
    Login(token::LoginCmd),
    /// Sigil tokens: mint one bound to your certificate, introspect, look
    /// up or revoke.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Just-in-time elevation: roles, requests, approvals, revocation.
    #[command(subcommand)]
    Jit(jit::JitCmd),
    /// Quarantine a compromised identity (`sigil quarantine SPIFFE_ID
    /// --reason TEXT`), `lift` it, or `list` them.
    Quarantine(quarantine::QuarantineArgs),
}

/// The environment variable holding a sigil token to authenticate with
/// (never a flag: a flag's value is visible in the process list).
pub const TOKEN_ENV: &str = "SIGIL_TOKEN";

/// A command's failure: the one line printed on stderr.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// Formats a gRPC status as one line.
pub fn status_line(s: &tonic::Status) -> String {
    let code = format!("{:?}", s.code());
    let mut words = String::new();
    for (i, ch) in code.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(ch.to_ascii_lowercase());
    }
    format!("{words}: {}", s.message().replace('\n', " "))
}

impl Cli {
    fn target(&self) -> Result<Target, Failure> {
        if let Some(path) = &self.admin_socket {
            return Ok(Target::Admin(path.clone()));
        }
        if let Some(addr) = &self.server {
            // Inside a workload, with no other credential given: the SVID
            // comes from the Workload API and stays in memory.
            if self.svid_dir.is_none()
                && std::env::var_os(TOKEN_ENV).is_none()
                && let Some(endpoint) = workload::endpoint_if_set()
            {
                return Ok(Target::Workload {
                    addr: addr.clone(),
                    ca_bundle: self.ca_bundle.clone(),
                    endpoint,
                });
            }
            let ca_bundle = self
                .ca_bundle
                .clone()
                .ok_or(client::ConnectError::NoBundle)?;
            return Ok(Target::Tls {
                addr: addr.clone(),
                ca_bundle,
                svid_dir: self.svid_dir.clone(),
            });
        }
        Err(client::ConnectError::NoTarget.into())
    }

    async fn clients(&self) -> Result<client::Clients, Failure> {
        let target = self.target()?;
        if let Target::Workload {
            addr,
            ca_bundle,
            endpoint,
        } = &target
        {
            let me = workload::fetch_identity(endpoint).await?;
            let roots = match ca_bundle {
                Some(path) => client::read_bundle(path)?,
                None => me.bundle.clone(),
            };
            let channel =
                client::connect_tls_with(addr, &roots, Some((me.chain.as_slice(), &me.key)))
                    .await?;
            return Ok(client::Clients::new(channel));
        }
        let channel = client::connect(&target).await?;
        // A token speaks over TLS only: the admin socket identifies its
        // caller by uid.
        let credential = match std::env::var(TOKEN_ENV) {
            Ok(token) if matches!(target, Target::Tls { .. }) => {
                client::Credential::bearer(&crate::secret::Secret::from(token))?
            }
            _ => client::Credential::default(),
        };
        Ok(client::Clients::with_credential(channel, credential))
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let out = output::Out { json: cli.json };
    match &cli.command {
        Command::Dev(args) => dev::run(args, &out).await,
        Command::Server { config } => dev::run_server(config).await,
        Command::Agent {
            config,
            join_token_file,
            join_token,
        } => agent::run(config, join_token_file.as_deref(), join_token.clone()).await,
        Command::Operator(cmd) => ops::operator(&cli, cmd, &out).await,
        Command::Entry(cmd) => entry::run(&cli, cmd, &out).await,
        Command::Bundle(cmd) => federation::bundle(&cli, cmd, &out).await,
        Command::Svid(ops::SvidCmd::Fetch(args)) => workload::svid_fetch(args, &out).await,
        Command::Svid(cmd) => ops::svid(&cli, cmd, &out).await,
        Command::Jwt(ops::JwtCmd::Fetch(args)) => workload::jwt_fetch(args, &out).await,
        Command::Jwt(ops::JwtCmd::Validate(args)) => workload::jwt_validate(args, &out).await,
        Command::Jwt(cmd) => ops::jwt(&cli, cmd, &out).await,
        Command::Policy(cmd) => ops::policy(&cli, cmd, &out).await,
        Command::Audit(cmd) => ops::audit(&cli, cmd, &out).await,
        Command::JoinToken(cmd) => agents::join_token(&cli, cmd, &out).await,
        Command::AgentNode(cmd) => agents::agent_node(&cli, cmd, &out).await,
        Command::Secret(cmd) => secret::run(&cli, cmd, &out).await,
        Command::Login(cmd) => token::login(&cli, cmd, &out).await,
        Command::Token(cmd) => token::token(&cli, cmd, &out).await,
        Command::Jit(cmd) => jit::run(&cli, cmd, &out).await,
        Command::Quarantine(args) => quarantine::run(&cli, args, &out).await,
    }
}

fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sigil=info"));
    // sled is held at info whatever SIGIL_LOG asks, for two reasons. Its
    // debug and trace output prints stored pages byte for byte: sealed
    // values, but also wrapped keys and the audit head. And some of those
    // lines are logged from crossbeam-epoch's deferred functions, which run
    // in a thread's local destructors when it exits; by then the log
    // formatter's own thread-local buffer may be gone, and the process
    // aborts ("thread local panicked on drop").
    if let Ok(cap) = "sled=info".parse() {
        filter = filter.add_directive(cap);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The agent's calls are each a few microseconds of work on cached state,
    // and handing them between worker threads cost more than the work: one
    // worker answers about twice as many Workload API calls per second as
    // two on the same machine. Blocking work (hashing executables) still
    // runs on the blocking pool. `TOKIO_WORKER_THREADS` overrides.
    if matches!(cli.command, Command::Agent { .. })
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none()
    {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => 0,
        Err(Failure(msg)) => {
            eprintln!("error: {}", msg.replace('\n', " "));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;

    #[test]
    fn a_join_token_beginning_with_a_hyphen_is_the_tokens_value() {
        let cli = Cli::try_parse_from([
            "sigil",
            "agent",
            "--config",
            "agent.toml",
            "--join-token",
            "-Xq3_token",
        ])
        .unwrap();
        match cli.command {
            Command::Agent { join_token, .. } => {
                assert_eq!(join_token.as_deref(), Some("-Xq3_token"));
            }
            other => panic!("{other:?}"),
        }
    }
}

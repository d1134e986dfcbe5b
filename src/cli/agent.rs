//! `sigil agent --config FILE [--join-token-file F]`: a thin wrapper that
//! loads the configuration and the join token, binds the Workload API socket
//! and runs the agent.
//!
//! The join token is a one-time credential that makes its first user the
//! agent, so it is taken from places other local users cannot read: a file
//! (mode 0600, owned by the caller or root), standard input, or
//! `$SIGIL_JOIN_TOKEN` (a process's environment is readable only by its own
//! user and root). `--join-token T` remains for compatibility, with a
//! warning: arguments are world-readable in `/proc/<pid>/cmdline`, and a
//! local user polling it can redeem the token first.

use super::Failure;
use crate::agent::run::{Agent, AgentOptions};
use crate::agent::workload::bind_workload_socket;
use crate::config::AgentConfig;
use crate::secret::Secret;
use std::path::Path;

/// The environment variable that may hold the join token.
const JOIN_TOKEN_ENV: &str = "SIGIL_JOIN_TOKEN";

/// What is printed and logged when the token is given on the command line.
const VISIBLE_TOKEN_WARNING: &str = "the join token given with --join-token is visible to every local user in the process list; use --join-token-file or $SIGIL_JOIN_TOKEN";

/// The join token, if one was given: `--join-token-file` (`-` for standard
/// input), then `--join-token` (with a warning), then `$SIGIL_JOIN_TOKEN`.
/// An explicit option wins over the environment, as usual.
fn join_token(file: Option<&Path>, inline: Option<String>) -> Result<Option<Secret>, Failure> {
    if let Some(f) = file {
        let token = if f == Path::new("-") {
            crate::config::read_secret_stdin()?
        } else {
            crate::config::read_secret_file(f)?
        };
        return Ok(Some(token));
    }
    if let Some(t) = inline {
        eprintln!("WARNING: {VISIBLE_TOKEN_WARNING}");
        tracing::warn!("{VISIBLE_TOKEN_WARNING}");
        return Ok(Some(Secret::from(t)));
    }
    if std::env::var_os(JOIN_TOKEN_ENV).is_some() {
        return Ok(Some(crate::config::read_secret_env(JOIN_TOKEN_ENV)?));
    }
    Ok(None)
}

/// Options for a config file's agent.
pub(super) fn options(config: &AgentConfig) -> AgentOptions {
    AgentOptions {
        server: config.server.clone(),
        trust_bundle: config.trust_bundle.clone(),
        data_dir: config.data_dir.clone(),
        attest: crate::attest::AttestConfig {
            max_exe_bytes: config
                .max_exe_bytes
                .unwrap_or(crate::attest::AttestConfig::default().max_exe_bytes),
            ..crate::attest::AttestConfig::default()
        },
        limits: config.limits,
    }
}

pub(super) async fn run(
    config: &Path,
    token_file: Option<&Path>,
    token_inline: Option<String>,
) -> Result<(), Failure> {
    let shutdown = super::dev::shutdown_signal();
    let config = AgentConfig::load(config)?;
    let mut opts = options(&config);
    super::dev::fit_to_fd_limit(None, Some(&mut opts.limits));
    let token = join_token(token_file, token_inline)?;
    let agent = Agent::start(&opts, token.as_ref()).await?;
    let listener = bind_workload_socket(&config.socket)
        .map_err(|e| Failure(format!("cannot bind {}: {e}", config.socket.display())))?;
    tracing::info!(agent = %agent.session.agent_id(), socket = %config.socket.display(), "serving the Workload API");
    agent.run(&opts, listener, shutdown).await?;
    Ok(())
}

//! `sigil agent --config FILE [--join-token T]`: a thin wrapper that loads
//! the configuration, binds the Workload API socket and runs the agent.

use super::Failure;
use crate::agent::run::{Agent, AgentOptions};
use crate::agent::workload::bind_workload_socket;
use crate::config::AgentConfig;
use crate::secret::Secret;
use std::path::Path;

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

pub(super) async fn run(config: &Path, join_token: Option<String>) -> Result<(), Failure> {
    let config = AgentConfig::load(config)?;
    let mut opts = options(&config);
    super::dev::fit_to_fd_limit(None, Some(&mut opts.limits));
    let token = join_token.map(Secret::from);
    let agent = Agent::start(&opts, token.as_ref()).await?;
    let listener = bind_workload_socket(&config.socket)
        .map_err(|e| Failure(format!("cannot bind {}: {e}", config.socket.display())))?;
    tracing::info!(agent = %agent.session.agent_id(), socket = %config.socket.display(), "serving the Workload API");
    agent
        .run(&opts, listener, super::dev::shutdown_signal())
        .await?;
    Ok(())
}

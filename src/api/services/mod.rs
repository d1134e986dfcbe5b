//! The gRPC services and the router that serves them, with health and
//! reflection behind the same chokepoint.

mod agents;
mod audit;
pub(crate) mod auth;
mod bundle;
mod entries;
mod jit;
mod node;
mod operator;
mod policy;
mod quarantine;
pub(crate) mod secrets;

use super::gate::Gate;
use super::pb;
use crate::policy::{Action, Resource};
use crate::server::Server;
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;

/// Every service of the sigil API, plus gRPC health and reflection.
pub fn router(server: Arc<Server>) -> Result<Routes, tonic_reflection::server::Error> {
    let gate = Gate::new(server.clone());
    let (reporter, health) = tonic_health::server::health_reporter();
    // Health follows the seal state: serving only when unsealed.
    server.set_health_reporter(reporter);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut routes = Routes::default();
    routes = routes
        .add_service(pb::operator_server::OperatorServer::new(
            operator::OperatorService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::entries_server::EntriesServer::new(
            entries::EntriesService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::bundle_server::BundleServer::new(
            bundle::BundleService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::node_server::NodeServer::new(node::NodeService::new(
            gate.clone(),
            server.clone(),
        )))
        .add_service(pb::policy_server::PolicyServer::new(
            policy::PolicyService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::agents_server::AgentsServer::new(
            agents::AgentsService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::audit_server::AuditServer::new(
            audit::AuditService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::jit_server::JitServer::new(jit::JitService::new(
            gate.clone(),
            server.clone(),
        )))
        .add_service(pb::quarantine_server::QuarantineServer::new(
            quarantine::QuarantineService::new(gate.clone(), server.clone()),
        ))
        .add_service(pb::auth_server::AuthServer::new(auth::AuthService::new(
            gate.clone(),
            server.clone(),
        )))
        .add_service(pb::secrets_server::SecretsServer::new(
            secrets::SecretsService::new(gate.clone(), server),
        ))
        .add_service(Guarded::new(health, gate.clone(), Action::Health))
        .add_service(Guarded::new(reflection, gate, Action::Reflection));
    Ok(routes)
}

/// Puts a service that sigil did not write (health, reflection) behind the
/// chokepoint, so that no RPC bypasses authentication, policy and audit.
#[derive(Clone, Debug)]
struct Guarded<S> {
    inner: S,
    gate: Gate,
    action: Action,
}

impl<S> Guarded<S> {
    fn new(inner: S, gate: Gate, action: Action) -> Self {
        Self {
            inner,
            gate,
            action,
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for Guarded<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is checked on the clone that serves the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        let action = self.action;
        Box::pin(async move {
            let resource = Resource::new("rpc", Some(req.uri().path().to_owned()));
            match gate
                .authorize_parts(req.extensions(), action, resource)
                .await
            {
                Ok(_) => {
                    futures::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                    inner.call(req).await
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

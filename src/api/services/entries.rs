//! `sigil.v1.Entries`: registration entry administration.

use crate::api::ApiError;
use crate::api::convert::{entry_draft, entry_to_pb};
use crate::api::gate::Gate;
use crate::api::pb::{self, entries_server::Entries};
use crate::policy::{Action, Resource};
use crate::registry::EntryId;
use crate::server::Server;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub(super) struct EntriesService {
    gate: Gate,
    server: Arc<Server>,
}

impl EntriesService {
    pub(super) fn new(gate: Gate, server: Arc<Server>) -> Self {
        Self { gate, server }
    }
}

fn entry(id: Option<&str>) -> Resource {
    Resource::new("entry", id.map(str::to_owned))
}

fn parse_id(id: &str) -> Result<EntryId, ApiError> {
    EntryId::parse(id).map_err(ApiError::from)
}

#[tonic::async_trait]
impl Entries for EntriesService {
    async fn create(
        &self,
        req: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        self.gate
            .authorize(&req, Action::EntryCreate, entry(None))
            .await?;
        let msg = req
            .into_inner()
            .entry
            .ok_or_else(|| ApiError::InvalidArgument("entry is required".into()))?;
        let created = self
            .server
            .entries()
            .create(&entry_draft(&msg), self.server.now())
            .await?;
        Ok(Response::new(entry_to_pb(&created)))
    }

    async fn list(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        self.gate
            .authorize(&req, Action::EntryList, entry(None))
            .await?;
        let filter = req.into_inner();
        let entries = self
            .server
            .entries()
            .list()
            .into_iter()
            .filter(|e| filter.parent_id.is_empty() || e.parent_id.as_str() == filter.parent_id)
            .filter(|e| filter.spiffe_id.is_empty() || e.spiffe_id.as_str() == filter.spiffe_id)
            .map(|e| entry_to_pb(&e))
            .collect();
        Ok(Response::new(pb::ListEntriesResponse { entries }))
    }

    async fn show(
        &self,
        req: Request<pb::ShowEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = req.get_ref().id.clone();
        self.gate
            .authorize(&req, Action::EntryShow, entry(Some(&id)))
            .await?;
        let found = self.server.entries().get(&parse_id(&id)?)?;
        Ok(Response::new(entry_to_pb(&found)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = req
            .get_ref()
            .entry
            .as_ref()
            .map(|e| e.id.clone())
            .unwrap_or_default();
        self.gate
            .authorize(&req, Action::EntryUpdate, entry(Some(&id)))
            .await?;
        let msg = req.into_inner();
        let body = msg
            .entry
            .ok_or_else(|| ApiError::InvalidArgument("entry is required".into()))?;
        let updated = self
            .server
            .entries()
            .update(&parse_id(&id)?, &entry_draft(&body), msg.expected_revision)
            .await?;
        Ok(Response::new(entry_to_pb(&updated)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        let id = req.get_ref().id.clone();
        self.gate
            .authorize(&req, Action::EntryDelete, entry(Some(&id)))
            .await?;
        self.server.entries().delete(&parse_id(&id)?).await?;
        Ok(Response::new(pb::DeleteEntryResponse {}))
    }
}

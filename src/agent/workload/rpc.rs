//! The five Workload API RPCs (SPEC §3.1) over [`WorkloadApi`]'s helpers.

use super::streams::{Updates, follow};
use super::{
    WorkloadApi, WorkloadError, check_header, to_status, unique_hints, unverified_trust_domain,
};
use crate::api::workload as wpb;
use crate::api::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::authority::{Bundle, check_audiences};
use crate::id::{Selector, SpiffeId};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

type Stream<T> = Updates<T>;

/// What decides whether an X.509 snapshot changed: SPIFFE IDs, chains, the
/// bundle and the federated bundles, never the keys (a new key always comes
/// with a new leaf).
type X509Fingerprint = (Vec<(String, Vec<u8>)>, Vec<u8>, BundleKey);

/// A bundle map in a comparable form.
type BundleKey = Vec<(String, Vec<u8>)>;

fn bundle_key(map: &HashMap<String, Vec<u8>>) -> BundleKey {
    let mut key: BundleKey = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    key.sort();
    key
}

fn x509_fingerprint(r: &wpb::X509svidResponse) -> X509Fingerprint {
    let svids = r
        .svids
        .iter()
        .map(|s| (s.spiffe_id.clone(), s.x509_svid.clone()))
        .collect();
    let bundle = r
        .svids
        .first()
        .map(|s| s.bundle.clone())
        .unwrap_or_default();
    (svids, bundle, bundle_key(&r.federated_bundles))
}

fn x509_bundle_value(b: &Bundle) -> Vec<u8> {
    b.x509_concat_der()
}

/// A trust domain without JWT keys has no JWT bundle to send: its value would
/// be an empty key set, and values are never empty (it is left out instead).
fn jwt_bundle_value(b: &Bundle) -> Vec<u8> {
    if b.jwt_authorities.is_empty() {
        return Vec::new();
    }
    b.to_jwt_jwks_json().into_bytes()
}

impl WorkloadApi {
    async fn x509_stream(
        &self,
        selectors: Arc<[Selector]>,
    ) -> Result<Stream<wpb::X509svidResponse>, WorkloadError> {
        let mut changes = self.provider.changes();
        // Whatever happened before the first snapshot is already in it.
        changes.borrow_and_update();
        let first = self.x509_snapshot(&selectors).await?;
        let key = x509_fingerprint(&first);
        let api = self.clone();
        Ok(follow(changes, (first, key), move || {
            let (api, selectors) = (api.clone(), selectors.clone());
            async move {
                let r = api.x509_snapshot(&selectors).await?;
                let key = x509_fingerprint(&r);
                Ok((r, key))
            }
        }))
    }

    /// A bundle stream: `make` builds the message from the map, `encode`
    /// the value for the trust domain.
    fn bundle_stream<T: Send + 'static>(
        &self,
        selectors: Arc<[Selector]>,
        encode: fn(&Bundle) -> Vec<u8>,
        make: fn(HashMap<String, Vec<u8>>) -> T,
    ) -> Result<Stream<T>, WorkloadError> {
        let mut changes = self.provider.changes();
        changes.borrow_and_update();
        let resolve = {
            let api = self.clone();
            move || {
                let map: HashMap<String, Vec<u8>> =
                    api.bundle_map(&selectors, encode)?.into_iter().collect();
                let key = bundle_key(&map);
                Ok((make(map), key))
            }
        };
        let first = resolve()?;
        Ok(follow(changes, first, move || {
            let r = resolve();
            async move { r }
        }))
    }

    async fn jwt_svids(
        &self,
        selectors: &[Selector],
        req: wpb::JwtsvidRequest,
    ) -> Result<wpb::JwtsvidResponse, WorkloadError> {
        let mut entries = unique_hints(self.entries(selectors)?);
        if !req.spiffe_id.is_empty() {
            let wanted = SpiffeId::parse(&req.spiffe_id).map_err(WorkloadError::BadSpiffeId)?;
            let one = entries
                .into_iter()
                .find(|e| e.spiffe_id == wanted)
                .ok_or(WorkloadError::NoIdentityIssued)?;
            entries = vec![one];
        }
        let mut svids = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = self
                .provider
                .jwt_svid(&entry, &req.audience)
                .await
                .map_err(WorkloadError::Agent)?;
            let token = String::from_utf8(id.token.expose().to_vec()).map_err(|_| {
                WorkloadError::Agent(crate::agent::AgentError::Internal(
                    "JWT-SVID is not UTF-8".into(),
                ))
            })?;
            svids.push(wpb::Jwtsvid {
                spiffe_id: id.spiffe_id.to_string(),
                svid: token,
                hint: entry.hint.clone(),
            });
        }
        Ok(wpb::JwtsvidResponse { svids })
    }

    /// Validates with the bundle of the token's trust domain: ours, or a foreign
    /// one the caller's entries federate with (`selectors` are the caller's).
    fn validate(
        &self,
        selectors: &[Selector],
        req: &wpb::ValidateJwtsvidRequest,
    ) -> Result<wpb::ValidateJwtsvidResponse, WorkloadError> {
        let own = self.bundle()?;
        let own_td = own.trust_domain.clone();
        let bundle = match unverified_trust_domain(&req.svid) {
            Some(td) if td != own.trust_domain => {
                let entries = self.provider.matching(selectors);
                super::federated::bundle_for(&*self.provider, &own.trust_domain, &entries, &td)
                    .ok_or_else(|| WorkloadError::UnknownTrustDomain(td.as_str().to_owned()))?
            }
            _ => own,
        };
        let claims = crate::authority::validate_jwt_svid(
            &req.svid,
            &req.audience,
            &bundle.jwt_bundle(),
            crate::clock::now(),
        )
        .map_err(WorkloadError::InvalidToken)?;
        // The signature verified, so the header's kid names the key that signed.
        // A compromised key of our own stays in the bundle for its grace period,
        // but what it signed proves nothing any more.
        if bundle.trust_domain == own_td
            && let Some(kid) = crate::authority::jwt_key_id(req.svid.as_bytes())
            && self.provider.jwt_key_tainted(&kid)
        {
            return Err(WorkloadError::TaintedKey(kid));
        }
        // A bundle verifies only its own trust domain's identities (Federation §7.3).
        if claims.spiffe_id.trust_domain_str() != bundle.trust_domain.as_str() {
            return Err(WorkloadError::UnknownTrustDomain(
                claims.spiffe_id.trust_domain_str().to_owned(),
            ));
        }
        Ok(wpb::ValidateJwtsvidResponse {
            spiffe_id: claims.spiffe_id.to_string(),
            claims: Some(super::claims::to_struct(claims.all)),
        })
    }
}

fn status(e: WorkloadError) -> Status {
    to_status(&e)
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream<wpb::X509svidResponse>;
    type FetchX509BundlesStream = Stream<wpb::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<wpb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<wpb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.caller(&request).await.map_err(status)?;
        let stream = self.x509_stream(selectors).await.map_err(status)?;
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<wpb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let selectors = self.caller(&request).await.map_err(status)?;
        let stream = self
            .bundle_stream(selectors, x509_bundle_value, |bundles| {
                wpb::X509BundlesResponse {
                    bundles,
                    ..Default::default()
                }
            })
            .map_err(status)?;
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<wpb::JwtsvidRequest>,
    ) -> Result<Response<wpb::JwtsvidResponse>, Status> {
        check_header(&request).map_err(status)?;
        let req = request.get_ref();
        // Request errors come before attestation, as in SPIRE. The audience limits are
        // the authority's own, so a request the server would refuse never leaves the
        // agent (and never costs an attestation).
        check_audiences(&req.audience).map_err(|e| {
            status(if e.is_missing() {
                WorkloadError::MissingAudience
            } else {
                WorkloadError::BadAudience(e)
            })
        })?;
        if !req.spiffe_id.is_empty() {
            SpiffeId::parse(&req.spiffe_id).map_err(|e| status(WorkloadError::BadSpiffeId(e)))?;
        }
        let selectors = self.caller(&request).await.map_err(status)?;
        let r = self
            .jwt_svids(&selectors, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(r))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<wpb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let selectors = self.caller(&request).await.map_err(status)?;
        let stream = self
            .bundle_stream(selectors, jwt_bundle_value, |bundles| {
                wpb::JwtBundlesResponse { bundles }
            })
            .map_err(status)?;
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<wpb::ValidateJwtsvidRequest>,
    ) -> Result<Response<wpb::ValidateJwtsvidResponse>, Status> {
        check_header(&request).map_err(status)?;
        let req = request.get_ref();
        if req.audience.is_empty() {
            return Err(status(WorkloadError::MissingAudience));
        }
        if req.svid.is_empty() {
            return Err(status(WorkloadError::MissingToken));
        }
        // Any attested caller may validate; no entry needs to match (one that
        // matches none knows only its own trust domain's bundle).
        let selectors = self.caller(&request).await.map_err(status)?;
        let r = self
            .validate(&selectors, request.get_ref())
            .map_err(status)?;
        Ok(Response::new(r))
    }
}

//! The sigil gRPC API (SPEC §3.2): generated types, proto ⇄ domain
//! conversion, the one mapping from errors to `tonic::Status`, the
//! authorization chokepoint, and the service implementations.

pub mod convert;
pub mod error;
pub mod gate;
pub mod http;
mod services;

pub use error::ApiError;
pub use gate::{Caller, Decided, Gate};
pub use services::router;

/// Generated protobuf and gRPC code for package `sigil.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub mod pb {
    tonic::include_proto!("sigil.v1");

    /// The encoded descriptor set that gRPC reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sigil_descriptor.bin"));

    // Messages that carry passphrases or bearer tokens print only their
    // non-secret fields.
    impl std::fmt::Debug for InitRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("InitRequest")
                .field("passphrase", &"<redacted>")
                .finish()
        }
    }
    impl std::fmt::Debug for UnsealRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UnsealRequest")
                .field("passphrase", &"<redacted>")
                .field("accept_rollback", &self.accept_rollback)
                .finish()
        }
    }
    impl std::fmt::Debug for LoginOidcRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LoginOidcRequest")
                .field("role", &self.role)
                .field("jwt", &"<redacted>")
                .finish()
        }
    }
    impl std::fmt::Debug for IntrospectRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("IntrospectRequest")
                .field("token", &"<redacted>")
                .finish()
        }
    }
    impl std::fmt::Debug for LoginResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LoginResponse")
                .field("token", &"<redacted>")
                .field("info", &self.info)
                .finish()
        }
    }
    impl std::fmt::Debug for CreateJoinTokenResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CreateJoinTokenResponse")
                .field("token", &"<redacted>")
                .field("agent_id", &self.agent_id)
                .field("expires_at", &self.expires_at)
                .finish()
        }
    }
    impl std::fmt::Debug for AttestAgentRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AttestAgentRequest")
                .field("join_token", &"<redacted>")
                .field("csr_len", &self.csr.len())
                .finish()
        }
    }
    // Secret versions show their field names and sizes, never values.
    fn field_sizes(fields: &std::collections::HashMap<String, Vec<u8>>) -> Vec<(String, usize)> {
        let mut v: Vec<_> = fields.iter().map(|(k, x)| (k.clone(), x.len())).collect();
        v.sort();
        v
    }
    impl std::fmt::Debug for PutSecretRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PutSecretRequest")
                .field("path", &self.path)
                .field("fields", &field_sizes(&self.fields))
                .field("has_cas", &self.has_cas)
                .field("cas", &self.cas)
                .finish()
        }
    }
    impl std::fmt::Debug for SecretVersion {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SecretVersion")
                .field("path", &self.path)
                .field("version", &self.version)
                .field("fields", &field_sizes(&self.fields))
                .field("previous", &self.previous)
                .finish_non_exhaustive()
        }
    }
    impl std::fmt::Debug for MintJwtSvidResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MintJwtSvidResponse")
                .field("token", &"<redacted>")
                .field("expires_at", &self.expires_at)
                .finish()
        }
    }
}

/// Generated code for the SPIFFE Workload API (the proto has no package).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub mod workload {
    tonic::include_proto!("_");

    /// The encoded descriptor set that gRPC reflection serves on the agent socket.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/workload_descriptor.bin"));

    // Messages that carry private keys or bearer tokens print only their
    // non-secret fields.
    impl std::fmt::Debug for X509svid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("X509svid")
                .field("spiffe_id", &self.spiffe_id)
                .field("x509_svid_key", &"<redacted>")
                .field("hint", &self.hint)
                .finish_non_exhaustive()
        }
    }
    impl std::fmt::Debug for Jwtsvid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Jwtsvid")
                .field("spiffe_id", &self.spiffe_id)
                .field("svid", &"<redacted>")
                .field("hint", &self.hint)
                .finish()
        }
    }
    impl std::fmt::Debug for ValidateJwtsvidRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ValidateJwtsvidRequest")
                .field("audience", &self.audience)
                .field("svid", &"<redacted>")
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pb;

    #[test]
    fn secret_carrying_messages_redact_debug() {
        let a = pb::InitRequest {
            passphrase: b"marker-passphrase".to_vec(),
        };
        let b = pb::UnsealRequest {
            passphrase: b"marker-passphrase".to_vec(),
            accept_rollback: false,
        };
        let c = pb::MintJwtSvidResponse {
            token: "marker.token.value".into(),
            expires_at: 5,
        };
        let shown = format!("{a:?}{b:?}{c:?}");
        assert!(!shown.contains("marker"), "{shown}");
    }
}

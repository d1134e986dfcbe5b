//! The typed policy input (SPEC §2 chokepoint: "build the policy input").
//!
//! The chokepoint fills an [`Input`] from what it has *verified* about the
//! caller — never from what the caller claims — and the PDP hands it to Rego as
//! `input`. The JSON shape is part of the policy contract: policies read
//! `input.subject.kind`, `input.action`, `input.resource.kind`, and so on.

use serde::{Deserialize, Serialize};

/// One authorization question: may `subject` do `action` on `resource` now?
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Input {
    /// Who is asking, as authenticated by the chokepoint.
    pub subject: Subject,
    /// What they want to do.
    pub action: Action,
    /// What they want to do it to.
    pub resource: Resource,
    /// When and from where.
    pub context: Context,
    /// The grants the subject holds for now through approved JIT requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<InputGrant>,
}

/// A grant an approved just-in-time request gives the subject until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputGrant {
    /// `VERB:PATTERN`, as in the policy data.
    pub grant: String,
    /// The request it comes from.
    pub request: String,
    /// When it ends, Unix seconds.
    pub expires_at: u64,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// What kind of caller this is.
    pub kind: SubjectKind,
    /// The caller's SPIFFE ID, when it authenticated with an SVID or a token bound to one.
    pub spiffe_id: Option<String>,
    /// The caller's kernel uid, when it connected over the admin socket.
    pub uid: Option<u32>,
    /// How the caller proved who it is.
    pub authn: Authn,
    /// True when the caller's registration entry carries the admin flag.
    pub admin: bool,
    /// For a token: the role it was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// For a token: the grants it carries (`VERB:PATTERN`, its `scope`);
    /// a token may do exactly these, whatever its SPIFFE ID's own grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// For a token: it is bound to a certificate (RFC 8705) and was
    /// presented over a connection with that certificate. A token bound to
    /// another certificate, or presented without one, proves nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bound: bool,
}

impl Subject {
    /// A caller that proved nothing.
    pub fn anonymous() -> Self {
        Self {
            kind: SubjectKind::Anonymous,
            spiffe_id: None,
            uid: None,
            authn: Authn::None,
            admin: false,
            role: None,
            scopes: Vec::new(),
            bound: false,
        }
    }

    /// An operator on the admin socket, identified by its peer uid. Operators
    /// administer the server, so they carry the admin flag.
    pub fn operator(uid: u32) -> Self {
        Self {
            kind: SubjectKind::Operator,
            spiffe_id: None,
            uid: Some(uid),
            authn: Authn::AdminSocket,
            admin: true,
            role: None,
            scopes: Vec::new(),
            bound: false,
        }
    }

    /// A local user on the admin socket who is not an operator: the kernel
    /// vouches for the uid, which proves nothing else.
    pub fn local_user(uid: u32) -> Self {
        Self {
            kind: SubjectKind::Anonymous,
            spiffe_id: None,
            uid: Some(uid),
            authn: Authn::AdminSocket,
            admin: false,
            role: None,
            scopes: Vec::new(),
            bound: false,
        }
    }

    /// A node agent that authenticated with its agent SVID.
    pub fn agent(spiffe_id: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::Agent,
            spiffe_id: Some(spiffe_id.into()),
            uid: None,
            authn: Authn::Mtls,
            admin: false,
            role: None,
            scopes: Vec::new(),
            bound: false,
        }
    }

    /// A holder of a sigil token issued to `spiffe_id` for `role`, carrying
    /// `scopes`. Never an admin: a token may do what its scopes say.
    pub fn token(
        spiffe_id: impl Into<String>,
        role: impl Into<String>,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            kind: SubjectKind::Workload,
            spiffe_id: Some(spiffe_id.into()),
            uid: None,
            authn: Authn::Token,
            admin: false,
            role: Some(role.into()),
            scopes,
            bound: false,
        }
    }

    /// A workload that authenticated with `authn` as `spiffe_id`.
    pub fn workload(spiffe_id: impl Into<String>, authn: Authn, admin: bool) -> Self {
        Self {
            kind: SubjectKind::Workload,
            spiffe_id: Some(spiffe_id.into()),
            uid: None,
            authn,
            admin,
            role: None,
            scopes: Vec::new(),
            bound: false,
        }
    }
}

/// What kind of caller a [`Subject`] is. Serialized in lower case (`"operator"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A person on the host, connected through the admin Unix socket.
    Operator,
    /// A workload holding an SVID or a token.
    Workload,
    /// A node agent holding its agent SVID.
    Agent,
    /// A caller that proved nothing.
    Anonymous,
}

/// How a [`Subject`] authenticated. Serialized in snake case (`"admin_socket"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authn {
    /// Kernel peer credentials on the admin socket.
    AdminSocket,
    /// A client X.509-SVID over mutual TLS.
    Mtls,
    /// A bearer token.
    Token,
    /// Nothing.
    None,
}

impl Authn {
    /// The name policies and audit records use.
    pub fn as_str(self) -> &'static str {
        match self {
            Authn::AdminSocket => "admin_socket",
            Authn::Mtls => "mtls",
            Authn::Token => "token",
            Authn::None => "none",
        }
    }
}

/// Longest resource id kept in policy input and audit records, in bytes.
pub const MAX_RESOURCE_ID: usize = 512;

/// The thing acted on, e.g. `{kind: "entry", id: "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    /// The resource type, e.g. `entry`, `bundle`, `svid`, `server`.
    pub kind: String,
    /// The resource's identifier, when the action names one.
    pub id: Option<String>,
}

impl Resource {
    /// A resource of `kind`, naming `id` when the action has one. The id
    /// comes from the request before it is validated, so it is cut to
    /// [`MAX_RESOURCE_ID`] bytes: a caller must not be able to write large
    /// records into the audit log.
    pub fn new(kind: impl Into<String>, id: Option<String>) -> Self {
        let id = id.map(|mut id| {
            if id.len() > MAX_RESOURCE_ID {
                let mut cut = MAX_RESOURCE_ID;
                while !id.is_char_boundary(cut) {
                    cut -= 1;
                }
                id.truncate(cut);
                id.push_str("…(truncated)");
            }
            id
        });
        Self {
            kind: kind.into(),
            id,
        }
    }

    /// The resource as written in audit records: `kind` or `kind:id`.
    pub fn audit_name(&self) -> String {
        match &self.id {
            Some(id) => {
                let mut name = String::with_capacity(self.kind.len() + 1 + id.len());
                name.push_str(&self.kind);
                name.push(':');
                name.push_str(id);
                name
            }
            None => self.kind.clone(),
        }
    }

    /// A resource of `kind` without an identifier.
    pub fn kind(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: None,
        }
    }
}

/// When and from where the request came.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Context {
    /// Request time, Unix seconds (passed in; the PDP never reads the clock).
    pub time: u64,
    /// Where the request came from, e.g. `unix:uid=0` or `tcp:127.0.0.1:5555`.
    pub source: String,
}

/// Declares [`Action`] with its dotted names in one table, so adding an action
/// is one line and `as_str`, `ALL` and serialization cannot drift apart.
macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Everything a caller can ask to do, as a closed set. Policies see the
        /// dotted name (`"entry.create"`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Action {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The dotted name policies match on.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// The action with dotted name `name`, if there is one.
            pub fn from_name(name: &str) -> Option<Action> {
                match name {
                    $($name => Some(Action::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

actions! {
    /// Report seal state and version.
    OperatorStatus => "operator.status",
    /// Create the key hierarchy.
    OperatorInit => "operator.init",
    /// Unseal with the passphrase.
    OperatorUnseal => "operator.unseal",
    /// Seal: drop keys from memory.
    OperatorSeal => "operator.seal",
    /// Rotate the data keys.
    OperatorRotateKeys => "operator.rotate_keys",
    /// Rotate the CA or the JWT signing key now (`rotate-ca`), forced or not.
    OperatorRotateSigningKey => "operator.rotate_signing_key",
    /// Mark a CA or JWT signing key compromised (`taint-ca`, `taint-jwt-key`).
    OperatorTaintSigningKey => "operator.taint_signing_key",
    /// Create a registration entry.
    EntryCreate => "entry.create",
    /// List registration entries.
    EntryList => "entry.list",
    /// Show one registration entry.
    EntryShow => "entry.show",
    /// Update a registration entry.
    EntryUpdate => "entry.update",
    /// Delete a registration entry.
    EntryDelete => "entry.delete",
    /// Read the trust bundle.
    BundleShow => "bundle.show",
    /// Set a foreign trust domain's bundle: trust another CA for its identities.
    BundleSet => "bundle.set",
    /// List the foreign trust domains' bundles and their endpoints' status.
    BundleList => "bundle.list",
    /// Delete a foreign trust domain's bundle.
    BundleDelete => "bundle.delete",
    /// Mint an X.509-SVID.
    SvidMint => "svid.mint",
    /// Mint a JWT-SVID.
    JwtMint => "jwt.mint",
    /// Ask the PDP a hypothetical question.
    PolicyCheck => "policy.check",
    /// Reload the policy set.
    PolicyReload => "policy.reload",
    /// Verify the audit chain.
    AuditVerify => "audit.verify",
    /// Read recent audit records.
    AuditTail => "audit.tail",
    /// Health probe.
    Health => "health",
    /// gRPC server reflection.
    Reflection => "reflection",
    /// Prove a join token and receive a first agent SVID.
    AgentAttest => "agent.attest",
    /// Renew an agent's own SVID.
    AgentRenew => "agent.renew",
    /// Receive the entries an agent is authorized for.
    AgentSync => "agent.sync",
    /// Create a join token.
    JoinTokenCreate => "agent.token.create",
    /// Create a join token for a name an active agent holds, so another node
    /// can take over that identity.
    JoinTokenReplace => "agent.token.replace",
    /// List attested agents.
    AgentList => "agent.list",
    /// Ban an agent.
    AgentBan => "agent.ban",
    /// Read a secret version (grant verb `read`).
    SecretGet => "secret.get",
    /// Read a secret's metadata (`read`).
    SecretMeta => "secret.meta",
    /// Watch a secret for new versions (`read`).
    SecretWatch => "secret.watch",
    /// Show a secret's rotation (`read`).
    SecretRotationShow => "secret.rotation.show",
    /// List secret paths under a prefix (`list`).
    SecretList => "secret.list",
    /// Write a secret version (`write`).
    SecretPut => "secret.put",
    /// Soft-delete secret versions (`write`).
    SecretDelete => "secret.delete",
    /// Restore soft-deleted versions (`write`).
    SecretUndelete => "secret.undelete",
    /// Change max-versions or custom metadata (`write`).
    SecretMetaWrite => "secret.meta.write",
    /// Destroy secret versions for good (`destroy`).
    SecretDestroy => "secret.destroy",
    /// Set a secret's rotation (`rotate`).
    SecretRotationSet => "secret.rotation.set",
    /// Stop a secret's rotation (`rotate`).
    SecretRotationDisable => "secret.rotation.disable",
    /// Rotate a secret now (`rotate`).
    SecretRotate => "secret.rotate",
    /// Trade a CI platform's OIDC JWT for a sigil token (the JWT is the
    /// credential, checked by the login itself).
    AuthLogin => "auth.login",
    /// Look up the token presented with the request.
    TokenLookupSelf => "token.lookup_self",
    /// Revoke the token presented with the request.
    TokenRevokeSelf => "token.revoke_self",
    /// List the roles that may be requested just in time.
    JitRoles => "jit.roles",
    /// Mint a token bound to the caller's certificate, with scopes it holds.
    TokenMint => "token.mint",
    /// Ask whether a token is in force (RFC 7662 introspection).
    TokenIntrospect => "token.introspect",
    /// Revoke tokens by jti, JIT request or subject.
    TokenRevoke => "token.revoke",
    /// Put a SPIFFE ID in quarantine (the ID is the resource id).
    QuarantineSet => "quarantine.set",
    /// Lift a quarantine.
    QuarantineLift => "quarantine.lift",
    /// List quarantined identities.
    QuarantineList => "quarantine.list",
    /// Ask for a role's grants for a while (the role is the resource id).
    JitRequest => "jit.request",
    /// Approve or deny a pending request for a role (the role is the
    /// resource id).
    JitApprove => "jit.approve",
    /// End an active grant, or withdraw a pending request, of a role.
    JitRevoke => "jit.revoke",
    /// List or show requests (a caller sees its own, and those it may
    /// approve).
    JitList => "jit.list",
}

impl Action {
    /// Whether the action is answered while the store is sealed: only what an
    /// operator needs to get the server unsealed, and probes.
    pub fn allowed_while_sealed(self) -> bool {
        matches!(
            self,
            Action::OperatorStatus
                | Action::OperatorInit
                | Action::OperatorUnseal
                | Action::Health
                | Action::Reflection
        )
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! The built-in must-allow / must-deny cases every policy set must pass
//! before it becomes active (STYLE §9). They are few on purpose: each is a
//! property no sane deployment wants to lose, and a site's own policy is
//! free to decide everything else.

use super::input::{Action, Authn, Context, Input, Resource, Subject};

/// What a case requires of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The decision must allow.
    Allow,
    /// The decision must deny.
    Deny,
}

/// One built-in case.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// Named in `MustAllowFailed` / `MustDenyFailed`.
    pub name: &'static str,
    pub input: Input,
    pub expect: Expect,
}

/// A fixed instant, so the cases do not depend on the clock.
const CASE_TIME: u64 = 1_700_000_000;

fn input(subject: Subject, action: Action, resource: &str, source: &str) -> Input {
    Input {
        subject,
        action,
        resource: Resource::kind(resource),
        context: Context {
            time: CASE_TIME,
            source: source.to_string(),
        },
        grants: Vec::new(),
    }
}

/// The cases, in the order they are checked.
pub(crate) fn builtin_cases() -> Vec<Case> {
    let tcp = "tcp:127.0.0.1:40000";
    let sock = "unix:uid=0";
    let workload = || Subject::workload("spiffe://example.org/app", Authn::Mtls, false);
    let agent = || Subject::agent("spiffe://example.org/sigil/agent/node1");
    vec![
        Case {
            name: "anonymous caller may not create entries",
            input: input(Subject::anonymous(), Action::EntryCreate, "entry", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "anonymous caller may not seal the server",
            input: input(Subject::anonymous(), Action::OperatorSeal, "server", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "non-admin workload may not create entries",
            input: input(workload(), Action::EntryCreate, "entry", tcp),
            expect: Expect::Deny,
        },
        // A bearer token carries scopes for secrets; it must never be able
        // to administer identities, whatever its subject claims.
        Case {
            name: "a token may not create entries",
            input: input(
                Subject {
                    admin: true,
                    ..Subject::token(
                        "spiffe://example.org/ci/app",
                        "deploy",
                        vec!["write:**".into()],
                    )
                },
                Action::EntryCreate,
                "entry",
                tcp,
            ),
            expect: Expect::Deny,
        },
        // Nor may it approve elevation: approvals are made by identities that
        // proved themselves, never by a bearer of a copied string.
        Case {
            name: "a token may not approve elevation",
            input: input(
                Subject {
                    admin: true,
                    ..Subject::token(
                        "spiffe://example.org/ci/app",
                        "deploy",
                        vec!["write:**".into()],
                    )
                },
                Action::JitApprove,
                "jit_role",
                tcp,
            ),
            expect: Expect::Deny,
        },
        // Status must keep working for the operator, sealed or not: it is how
        // they find out what state the server is in.
        Case {
            name: "operator on the admin socket may read status",
            input: input(Subject::operator(0), Action::OperatorStatus, "server", sock),
            expect: Expect::Allow,
        },
        // A token for a name an active agent holds lets a new node take over
        // that identity (and everything registered under it): at most
        // operators and admin workloads may ask for one.
        Case {
            name: "anonymous caller may not replace an agent's join token",
            input: input(
                Subject::anonymous(),
                Action::JoinTokenReplace,
                "join_token",
                tcp,
            ),
            expect: Expect::Deny,
        },
        Case {
            name: "non-admin workload may not replace an agent's join token",
            input: input(workload(), Action::JoinTokenReplace, "join_token", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "agent may not replace an agent's join token",
            input: input(agent(), Action::JoinTokenReplace, "join_token", tcp),
            expect: Expect::Deny,
        },
        // A foreign bundle decides which CA this server and its workloads trust
        // for another trust domain's identities: whoever sets one can have
        // identities of that trust domain forged for them.
        Case {
            name: "non-admin workload may not set a foreign bundle",
            input: input(workload(), Action::BundleSet, "bundle", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "agent may not set a foreign bundle",
            input: input(agent(), Action::BundleSet, "bundle", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "anonymous caller may not delete a foreign bundle",
            input: input(Subject::anonymous(), Action::BundleDelete, "bundle", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "operator on the admin socket may set a foreign bundle",
            input: input(Subject::operator(0), Action::BundleSet, "bundle", sock),
            expect: Expect::Allow,
        },
        // Rotating and tainting keys is how a compromise is answered: nobody
        // but operators and admin workloads may force a new CA on every
        // workload or pull a key from the bundle, and operators must always
        // be able to.
        Case {
            name: "anonymous caller may not rotate or taint keys",
            input: input(
                Subject::anonymous(),
                Action::OperatorTaintSigningKey,
                "x509-ca",
                tcp,
            ),
            expect: Expect::Deny,
        },
        Case {
            name: "non-admin workload may not rotate the CA",
            input: input(workload(), Action::OperatorRotateSigningKey, "x509-ca", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "non-admin workload may not taint a key",
            input: input(workload(), Action::OperatorTaintSigningKey, "x509-ca", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "agent may not rotate or taint keys",
            input: input(agent(), Action::OperatorTaintSigningKey, "x509-ca", tcp),
            expect: Expect::Deny,
        },
        Case {
            name: "operator on the admin socket may rotate the CA",
            input: input(
                Subject::operator(0),
                Action::OperatorRotateSigningKey,
                "x509-ca",
                sock,
            ),
            expect: Expect::Allow,
        },
        Case {
            name: "operator on the admin socket may taint a key",
            input: input(
                Subject::operator(0),
                Action::OperatorTaintSigningKey,
                "x509-ca",
                sock,
            ),
            expect: Expect::Allow,
        },
        // Without this an operator could lock themselves out of administration.
        Case {
            name: "operator on the admin socket may create entries",
            input: input(Subject::operator(0), Action::EntryCreate, "entry", sock),
            expect: Expect::Allow,
        },
    ]
}

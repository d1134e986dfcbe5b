# sigil default authorization policy (SPEC §2, §4).
#
# Input: see src/policy/input.rs. The PDP allows a request only when `allow`
# is true and `deny` is empty; anything not allowed below is denied by default.
package sigil.authz

import rego.v1

default allow := false

# Calls anyone may make, authenticated or not: the operator needs status
# while the server is sealed, probes need health, reflection only describes
# the API, which is public, and a new agent proves itself with its one-time
# join token inside the call (the server checks the token).
public_actions := {"operator.status", "health", "reflection", "agent.attest", "auth.login"}

# Credentials that count as authenticated for a workload or agent.
authenticated := {"mtls", "token"}

# What an admin workload (its registration entry carries `admin`) may do.
# Listed one by one rather than by prefix, so an action added later is not
# granted by accident.
admin_workload_actions := {
	"entry.create",
	"entry.list",
	"entry.show",
	"entry.update",
	"entry.delete",
	"bundle.show",
	"bundle.set",
	"bundle.list",
	"bundle.delete",
	"svid.mint",
	"jwt.mint",
	"policy.check",
	"audit.verify",
	"audit.tail",
	"agent.token.create",
	"agent.token.replace",
	"agent.list",
	"agent.ban",
	"operator.rotate_signing_key",
	"operator.taint_signing_key",
	"quarantine.set",
	"quarantine.lift",
	"quarantine.list",
}

# What an attested agent may do with its agent SVID. Issuance is further
# limited by the server to the entries the agent is authorized for.
agent_actions := {"agent.renew", "agent.sync", "svid.mint", "jwt.mint", "bundle.show"}

# Each grant below adds a named reason; a request is allowed when at least
# one grant applies. Naming every grant keeps the audit log explicit about
# why something was allowed, and evaluates each condition once.
allow if count(reasons) > 0

# Operators proved who they are with kernel peer credentials on the admin
# socket, which only the host's administrators can reach: they may do everything.
reasons contains "operator on the admin socket" if {
	input.subject.kind == "operator"
	input.subject.authn == "admin_socket"
}

reasons contains "public action" if input.action in public_actions

# Admin workloads, authenticated by SVID (mTLS). A token is never admin: it
# may do what its scopes say.
reasons contains "admin workload" if {
	input.subject.kind == "workload"
	input.subject.admin == true
	input.subject.authn == "mtls"
	input.action in admin_workload_actions
}

reasons contains "attested agent" if {
	input.subject.kind == "agent"
	input.subject.authn == "mtls"
	input.action in agent_actions
}

# Any authenticated workload or agent may read the trust bundle: it is
# public material they need to verify their peers.
reasons contains "authenticated bundle read" if {
	input.subject.kind in {"workload", "agent"}
	input.subject.authn in authenticated
	input.action == "bundle.show"
}

# Secrets (SPEC §3.4): who may do what to which path is written as grants in
# the data document `data.sigil.grants` (config/policies/grants.json), a map
# from SPIFFE ID to `VERB:PATTERN` strings. Each secret action needs one verb.
# There are no standing rights here for admin workloads: an admin entry
# administers identities, and reads secrets only through grants like anyone.
secret_verbs := {
	"secret.get": "read",
	"secret.meta": "read",
	"secret.watch": "read",
	"secret.rotation.show": "read",
	"secret.list": "list",
	"secret.put": "write",
	"secret.delete": "write",
	"secret.undelete": "write",
	"secret.meta.write": "write",
	"secret.destroy": "destroy",
	"secret.rotation.set": "rotate",
	"secret.rotation.disable": "rotate",
	"secret.rotate": "rotate",
}

reasons contains sprintf("grant %s", [grant]) if {
	verb := secret_verbs[input.action]
	input.subject.kind == "workload"
	input.subject.authn == "mtls"
	some grant in data.sigil.grants[input.subject.spiffe_id]
	grant_allows(grant, verb, input.resource.id)
}

# A sigil token (from `sigil login`) carries its grants as scopes: exactly
# what its role allows, not the standing grants of its SPIFFE ID.
reasons contains sprintf("token scope %s", [grant]) if {
	verb := secret_verbs[input.action]
	input.subject.kind == "workload"
	input.subject.authn == "token"
	some grant in input.subject.scopes
	grant_allows(grant, verb, input.resource.id)
}

# Any authenticated workload may see which roles can be requested just in
# time (what each grants, for how long, how many approvals).
reasons contains "authenticated jit role list" if {
	input.subject.kind == "workload"
	input.subject.authn in authenticated
	input.action == "jit.roles"
}

# Just-in-time elevation (SPEC §3.3 `sigil jit`). Any registered workload,
# proving its SVID over mTLS, may ask for a role; admin workloads approve,
# deny and revoke (operators on the admin socket may do everything). The
# role is the resource id, so a rule here can narrow either to some roles.
# Whatever this policy says, the server refuses an approval by the requester
# or by the identity the grant is for, and counts each approver once.
reasons contains "registered workload asks for elevation" if {
	input.subject.kind == "workload"
	input.subject.authn == "mtls"
	input.action == "jit.request"
}

reasons contains "admin workload decides elevation" if {
	input.subject.kind == "workload"
	input.subject.admin == true
	input.subject.authn == "mtls"
	input.action in {"jit.approve", "jit.revoke"}
}

# A workload may list requests: it sees its own, and those it may approve.
reasons contains "authenticated jit request list" if {
	input.subject.kind == "workload"
	input.subject.authn == "mtls"
	input.action == "jit.list"
}

# An approved request's grants (`input.grants`, present only while active)
# add to the workload's standing grants until the request ends.
reasons contains sprintf("jit grant %s (request %s)", [g.grant, g.request]) if {
	verb := secret_verbs[input.action]
	input.subject.kind == "workload"
	input.subject.authn == "mtls"
	some g in input.grants
	grant_allows(g.grant, verb, input.resource.id)
}

# A workload proving its SVID over mTLS may mint tokens for itself; the
# server lets a token carry only scopes the workload holds (standing or JIT
# grants) and binds it to the workload's certificate.
reasons contains "workload mints its own token" if {
	input.subject.kind == "workload"
	input.subject.authn == "mtls"
	input.action == "token.mint"
}

# Resource servers ask whether a token is in force (RFC 7662): any
# authenticated workload, with its SVID or with a sigil token of its own.
reasons contains "authenticated introspection" if {
	input.subject.kind == "workload"
	input.subject.authn in authenticated
	input.action == "token.introspect"
}

# Admin workloads revoke tokens by jti, JIT request or holder.
reasons contains "admin workload revokes tokens" if {
	input.subject.kind == "workload"
	input.subject.admin == true
	input.subject.authn == "mtls"
	input.action == "token.revoke"
}

# Actions that take a token only when it is bound to the certificate of the
# connection it comes over (RFC 8705): listed in the policy data as
# `data.sigil.bound_only` (action names), none by default.
bound_only contains action if some action in data.sigil.bound_only

deny contains sprintf("%s needs a token bound to the caller's certificate", [input.action]) if {
	input.subject.authn == "token"
	not input.subject.bound
	input.action in bound_only
}

# A token's holder may look up and revoke that token.
reasons contains "token holder" if {
	input.subject.authn == "token"
	input.action in {"token.lookup_self", "token.revoke_self"}
}

# A grant is VERB:PATTERN; the PDP checked every grant's syntax at load.
grant_allows(grant, verb, path) if {
	parts := split(grant, ":")
	count(parts) == 2
	parts[0] == verb
	pattern_matches(parts[1], path)
}

# `**` alone matches every path.
pattern_matches("**", _) := true

# A trailing `/**` matches one or more segments below its prefix. Only `**`
# matches the empty path (a list of everything).
pattern_matches(pattern, path) if {
	path != ""
	endswith(pattern, "/**")
	want := split(trim_suffix(pattern, "/**"), "/")
	have := split(path, "/")
	count(have) > count(want)
	every i, seg in want {
		segment_matches(seg, have[i])
	}
}

# Otherwise segment by segment, `*` matching exactly one.
pattern_matches(pattern, path) if {
	path != ""
	pattern != "**"
	not endswith(pattern, "/**")
	want := split(pattern, "/")
	have := split(path, "/")
	count(have) == count(want)
	every i, seg in want {
		segment_matches(seg, have[i])
	}
}

segment_matches(want, _) if want == "*"

segment_matches(want, have) if want == have

# Explain denials to anonymous callers rather than only defaulting.
deny contains msg if {
	input.subject.kind == "anonymous"
	not input.action in public_actions
	msg := sprintf("anonymous callers may not perform %s", [input.action])
}

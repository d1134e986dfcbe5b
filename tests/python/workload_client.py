"""A SPIFFE Workload API client on gRPC C-core (Python grpcio), for the
interop test in tests/it/interop/grpcio.rs.

Calls all five Workload API RPCs on the agent socket and gRPC health on both
sockets, each through a plain `unix:` target with grpcio's default
`:authority` (no override), and prints what it got as one JSON object.
Stubs are generated from proto/spiffe/workload.proto into a temporary
directory on every run, so they always match the proto in the tree.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from google.protobuf import json_format
from grpc_tools import protoc

HEADER = (("workload.spiffe.io", "true"),)
TIMEOUT = 10

HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""


def generate(proto_dir, out):
    """Compiles workload.proto and a minimal health.proto into `out`."""
    with open(os.path.join(out, "health.proto"), "w") as f:
        f.write(HEALTH_PROTO)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for include, name in ((proto_dir, "workload.proto"), (out, "health.proto")):
        rc = protoc.main([
            "protoc", f"-I{include}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}", name,
        ])
        if rc != 0:
            sys.exit(f"protoc failed on {name}")
    sys.path.insert(0, out)


def error(e):
    """A gRPC error as the test compares it."""
    return {"code": e.code().name, "details": e.details()}


def workload_calls(channel, audience):
    import workload_pb2 as pb
    import workload_pb2_grpc as rpc

    stub = rpc.SpiffeWorkloadAPIStub(channel)
    out = {}
    x509 = next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=TIMEOUT))
    out["x509_svids"] = [{
        "spiffe_id": s.spiffe_id,
        "chain": s.x509_svid.hex(),
        # The key is a secret: only its digest is compared.
        "key_sha256": hashlib.sha256(s.x509_svid_key).hexdigest(),
        "bundle": s.bundle.hex(),
        "hint": s.hint,
    } for s in x509.svids]
    bundles = next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=HEADER, timeout=TIMEOUT))
    out["x509_bundles"] = {td: der.hex() for td, der in bundles.bundles.items()}
    jwks = next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER, timeout=TIMEOUT))
    out["jwt_bundle_kids"] = {
        td: sorted(k["kid"] for k in json.loads(doc)["keys"]) for td, doc in jwks.bundles.items()
    }
    jwt = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), metadata=HEADER, timeout=TIMEOUT)
    out["jwt_svids"] = [{"spiffe_id": s.spiffe_id, "token": s.svid, "hint": s.hint} for s in jwt.svids]
    if jwt.svids:
        v = stub.ValidateJWTSVID(
            pb.ValidateJWTSVIDRequest(audience=audience, svid=jwt.svids[0].svid),
            metadata=HEADER, timeout=TIMEOUT)
        out["validated"] = {"spiffe_id": v.spiffe_id, "claims": json_format.MessageToDict(v.claims)}
    # The security-header rule: the same calls without it are refused.
    try:
        stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), timeout=TIMEOUT)
        out["unary_without_header"] = None
    except grpc.RpcError as e:
        out["unary_without_header"] = error(e)
    try:
        next(stub.FetchX509SVID(pb.X509SVIDRequest(), timeout=TIMEOUT))
        out["stream_without_header"] = None
    except grpc.RpcError as e:
        out["stream_without_header"] = error(e)
    return out


def health(channel):
    import health_pb2 as pb
    import health_pb2_grpc as rpc

    try:
        r = rpc.HealthStub(channel).Check(pb.HealthCheckRequest(), timeout=TIMEOUT)
        return pb.HealthCheckResponse.ServingStatus.Name(r.status)
    except grpc.RpcError as e:
        return error(e)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--agent-socket", required=True)
    p.add_argument("--admin-socket", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--proto-dir", required=True, help="the directory of workload.proto")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(args.proto_dir, tmp)
        # Plain `unix:` targets: grpcio picks the `:authority` itself.
        with grpc.insecure_channel(f"unix:{args.agent_socket}") as agent:
            out = {"grpcio": grpc.__version__, "agent_health": health(agent)}
            try:
                out.update(workload_calls(agent, args.audience))
            except grpc.RpcError as e:
                out["workload_error"] = error(e)
        with grpc.insecure_channel(f"unix:{args.admin_socket}") as admin:
            out["admin_health"] = health(admin)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

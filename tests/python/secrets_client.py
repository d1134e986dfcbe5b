"""A sigil Secrets API client on gRPC C-core (Python grpcio), for the interop
test in tests/it/secrets/grpcio.rs.

Over the admin socket, with grpcio's default `:authority`, it writes a
secret, reads it back, asks for a missing one and takes the first message of
a watch, then prints what it got as one JSON object. Stubs are generated from
proto/sigil/v1/secrets.proto into a temporary directory on every run.
"""

import argparse
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

TIMEOUT = 10


def generate(proto_dir, out):
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main([
        "protoc", f"-I{proto_dir}", f"-I{well_known}",
        f"--python_out={out}", f"--grpc_python_out={out}", "sigil/v1/secrets.proto",
    ])
    if rc != 0:
        sys.exit("protoc failed on secrets.proto")
    sys.path.insert(0, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin-socket", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--value-file", required=True)
    args = ap.parse_args()
    with open(args.value_file, "rb") as f:
        value = f.read()
    with tempfile.TemporaryDirectory() as out:
        generate(args.proto_dir, out)
        from sigil.v1 import secrets_pb2 as pb
        from sigil.v1 import secrets_pb2_grpc as rpc
        result = {}
        with grpc.insecure_channel(f"unix:{args.admin_socket}") as channel:
            stub = rpc.SecretsStub(channel)
            put = stub.Put(pb.PutSecretRequest(path="py/db", fields={"password": value}),
                           timeout=TIMEOUT)
            result["put_version"] = put.version
            got = stub.Get(pb.GetSecretRequest(path="py/db"), timeout=TIMEOUT)
            result["get"] = {"version": got.version,
                             "matches": got.fields["password"] == value}
            try:
                stub.Get(pb.GetSecretRequest(path="py/none"), timeout=TIMEOUT)
                result["missing"] = "answered"
            except grpc.RpcError as e:
                result["missing"] = {"code": e.code().name, "details": e.details()}
            watch = stub.Watch(pb.WatchSecretRequest(path="py/db"), timeout=TIMEOUT)
            first = next(watch)
            watch.cancel()
            result["watch"] = {"version": first.version,
                               "matches": first.fields["password"] == value}
        print(json.dumps(result))


if __name__ == "__main__":
    main()

"""hvac, the Python Vault client, against sigil's Vault-compatible HTTP API.

Run by tests/it/http/hvac.rs with the venv scripts/test.sh builds. Every
step runs whatever happens before it and is reported, as JSON on stdout,
with what hvac returned or the exception it raised, so the Rust side checks
each answer against what Vault gives.
"""

import argparse
import importlib.metadata
import json
import sys

import hvac
from hvac import exceptions


def outcome(step):
    """What `step()` returned, or the hvac exception it raised."""
    try:
        return {"ok": step()}
    except exceptions.VaultError as e:
        return {
            "error": type(e).__name__,
            "errors": list(e.errors or []),
            "message": str(e),
        }


def login(addr, ca, role, jwt):
    client = hvac.Client(url=addr, verify=ca)
    # use_token (the default) makes the client send the issued token next.
    auth = client.auth.jwt.jwt_login(role=role, jwt=jwt, path="jwt")
    return client, auth["auth"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--jwt-file", required=True)
    args = p.parse_args()
    with open(args.jwt_file, encoding="ascii") as f:
        jwt = f.read().strip()
    out = {"hvac": importlib.metadata.version("hvac")}
    anonymous = hvac.Client(url=args.addr, verify=args.ca)
    out["health"] = outcome(lambda: anonymous.sys.read_health_status(method="GET"))
    out["initialized"] = outcome(anonymous.sys.is_initialized)
    out["sealed"] = outcome(anonymous.sys.is_sealed)
    out["bad_role"] = outcome(
        lambda: anonymous.auth.jwt.jwt_login(role="nobody", jwt=jwt, path="jwt")
    )

    reader, auth = login(args.addr, args.ca, "deploy", jwt)
    out["login"] = {
        "policies": auth["policies"],
        "renewable": auth["renewable"],
        "lease_duration": auth["lease_duration"],
        "has_token": bool(auth["client_token"]),
    }
    out["authenticated"] = reader.is_authenticated()
    kv = reader.secrets.kv.v2

    def fields(path, version=None):
        r = kv.read_secret_version(
            path=path, version=version, mount_point="secret", raise_on_deleted_version=True
        )
        return {"data": r["data"]["data"], "version": r["data"]["metadata"]["version"]}

    out["read"] = outcome(lambda: fields("ci/app/db"))
    out["read_v1"] = outcome(lambda: fields("ci/app/db", 1))
    # Without raise_on_deleted_version, hvac hands back the 404 body Vault
    # sends for a deleted version: the version's metadata, no data.
    out["read_deleted"] = outcome(
        lambda: kv.read_secret_version(
            path="ci/app/old", version=1, mount_point="secret", raise_on_deleted_version=False
        )["data"]
    )
    out["read_deleted_raises"] = outcome(lambda: fields("ci/app/old", 1))
    out["read_missing"] = outcome(lambda: fields("ci/app/none"))
    out["read_forbidden"] = outcome(lambda: fields("ci/other/db"))

    def metadata(path):
        d = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
        return {
            "current_version": d["current_version"],
            "oldest_version": d["oldest_version"],
            "max_versions": d["max_versions"],
            "versions": sorted(d["versions"].keys()),
        }

    out["metadata"] = outcome(lambda: metadata("ci/app/db"))
    out["list_ci"] = outcome(
        lambda: kv.list_secrets(path="ci/", mount_point="secret")["data"]["keys"]
    )
    out["list_app"] = outcome(
        lambda: kv.list_secrets(path="ci/app", mount_point="secret")["data"]["keys"]
    )
    out["list_hidden"] = outcome(
        lambda: kv.list_secrets(path="ci/other", mount_point="secret")
    )
    out["write_refused"] = outcome(
        lambda: kv.create_or_update_secret(
            path="ci/app/db", secret={"password": "x"}, mount_point="secret"
        )
    )

    writer, _ = login(args.addr, args.ca, "writer", jwt)
    wkv = writer.secrets.kv.v2

    def write(cas):
        r = wkv.create_or_update_secret(
            path="ci/app/new", secret={"password": f"cas-{cas}"}, cas=cas, mount_point="secret"
        )
        return r["data"]["version"]

    out["write_create"] = outcome(lambda: write(0))
    out["write_create_again"] = outcome(lambda: write(0))
    out["write_cas"] = outcome(lambda: write(1))
    out["write_stale"] = outcome(lambda: write(1))
    out["read_written"] = outcome(
        lambda: kv.read_secret_version(
            path="ci/app/new", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
    )

    def lookup():
        d = reader.auth.token.lookup_self()["data"]
        return {"policies": d["policies"], "ttl": d["ttl"], "renewable": d["renewable"]}

    out["lookup_self"] = outcome(lookup)
    out["revoke_self"] = outcome(lambda: reader.auth.token.revoke_self().status_code)
    out["authenticated_after_revoke"] = reader.is_authenticated()
    out["read_after_revoke"] = outcome(lambda: fields("ci/app/db"))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""PyJWT, a JWT library of another stack, verifies sigil tokens the way a
resource server would: the key picked by `kid` from the JWKS in the SPIFFE
trust bundle, ES256 only, the audience checked.

Run by tests/it/interop/pyjwt.rs with the venv scripts/test.sh builds.
Reads a JSON file of cases ({"name", "token", "audience"}) and prints, as
JSON, each case's verified header and claims or the exception it raised.
"""

import argparse
import importlib.metadata
import json
import sys

import jwt


def verify(keys, token, audience):
    try:
        header = jwt.get_unverified_header(token)
        key = keys[header["kid"]]
        claims = jwt.decode(
            token,
            key=key,
            algorithms=["ES256"],
            audience=audience,
            options={"require": ["exp", "iat", "sub", "jti", "aud"]},
        )
        return {"ok": {"header": header, "claims": claims}}
    except (jwt.PyJWTError, KeyError) as e:
        return {"error": type(e).__name__, "message": str(e)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True, help="the SPIFFE bundle (JWKS) JSON")
    p.add_argument("--cases", required=True)
    args = p.parse_args()
    with open(args.bundle, encoding="utf-8") as f:
        bundle = json.load(f)
    # A resource server verifies with the JWT authorities only: the keys the
    # SPIFFE bundle marks "use": "jwt-svid".
    jwks = {"keys": [k for k in bundle["keys"] if k.get("use") == "jwt-svid"]}
    keys = jwt.PyJWKSet.from_dict(jwks)
    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)
    out = {"pyjwt": importlib.metadata.version("PyJWT")}
    for case in cases:
        out[case["name"]] = verify(keys, case["token"], case["audience"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""Verifies a Funk `x-soracom-token` with PyJWT, an independent JWT library,
as an Azure or Google function would: the public key is fetched over HTTP
from simgate's Endorse JWKS (BASE_URL/.well-known/jwks.json, sent with Host
HOST; PyJWKClient picks the key by the token's `kid`), and the token must
verify as RS256 with AUDIENCE (the SIM's SRN) and ISSUER, with exp and iat.

Usage: funk_verify.py BASE_URL HOST ISSUER AUDIENCE TOKEN
Prints {"header", "claims"} as JSON.
"""

import json
import sys

import jwt

base, host, issuer, audience, token = sys.argv[1:6]
client = jwt.PyJWKClient(base + "/.well-known/jwks.json", cache_keys=False,
                         headers={"Host": host})
key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(
    token,
    key.key,
    algorithms=["RS256"],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
)
print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))

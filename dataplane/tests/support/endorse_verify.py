"""Verifies a simgate Endorse token with PyJWT, an independent JWT library.

Usage: endorse_verify.py BASE_URL HOST ISSUER TOKEN

The public key is fetched over HTTP from BASE_URL/.well-known/jwks.json
(PyJWKClient, choosing the key by the token's `kid`), and also from
BASE_URL/v1/endorse/keys/{kid} as PEM; the token must verify with both
(RS256 or ES256, audience, issuer, exp/nbf/iat). HOST is sent as the Host header
(simgate routes `endorse.*` by it). Prints {"header", "claims"} as JSON.
"""

import json
import sys
import urllib.request

import jwt

base, host, issuer, token = sys.argv[1:5]
headers = {"Host": host}

client = jwt.PyJWKClient(base + "/.well-known/jwks.json", cache_keys=False, headers=headers)
signing_key = client.get_signing_key_from_jwt(token)
options = {"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]}
claims = jwt.decode(
    token,
    signing_key.key,
    algorithms=["RS256", "ES256"],
    audience="soracom-endorse-audience",
    issuer=issuer,
    options=options,
)

header = jwt.get_unverified_header(token)
req = urllib.request.Request(base + "/v1/endorse/keys/" + header["kid"], headers=headers)
with urllib.request.urlopen(req, timeout=10) as r:
    content_type = r.headers.get("Content-Type")
    pem = r.read()
from_pem = jwt.decode(
    token,
    pem,
    algorithms=["RS256", "ES256"],
    audience="soracom-endorse-audience",
    issuer=issuer,
    options=options,
)
assert from_pem == claims, (from_pem, claims)

print(json.dumps({"header": header, "claims": claims, "pemContentType": content_type}))

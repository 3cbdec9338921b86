"""moto's server (as `moto_server -H HOST -p PORT` runs it) plus one read-only
path for tests: GET /_simgate/iot-published lists every message published to
AWS IoT Data, which moto keeps but has no API to read back.

Usage: python3 moto_server.py HOST PORT
"""
import base64
import json
import sys

from moto.iotdata.models import iotdata_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)


def published():
    out = []
    for account, regions in iotdata_backends.items():
        for region, backend in regions.items():
            for topic, payload in backend.published_payloads:
                if isinstance(payload, str):
                    payload = payload.encode()
                out.append({
                    "account": account,
                    "region": region,
                    "topic": topic,
                    "payload": base64.b64encode(payload).decode(),
                })
    return out


def with_read_back(environ, start_response):
    if environ.get("PATH_INFO") == "/_simgate/iot-published":
        body = json.dumps(published()).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app(environ, start_response)


if __name__ == "__main__":
    run_simple(sys.argv[1], int(sys.argv[2]), with_read_back, threaded=True)

"""Prepares moto (started by moto.rs) for the Funk test, through boto3 as a
user would: Lambda without docker (moto's `lambda-simple` backend, set
through /moto-api/config), an IAM role and a Lambda function created
through the AWS APIs. Then, optionally, queues the answers moto's simple
Lambda gives to the next invocations (without a queued answer it echoes the
event).

Usage: funk_moto.py ENDPOINT FUNCTION_NAME [ANSWER_JSON ...]
Prints the function's ARN.
"""

import io
import json
import sys
import urllib.request
import zipfile

import boto3

endpoint, name, answers = sys.argv[1], sys.argv[2], sys.argv[3:]
region = "us-east-1"


def post(path, body):
    req = urllib.request.Request(
        endpoint + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 201), r.status


post("/moto-api/config", {"lambda": {"use_docker": False}})

session = boto3.Session(
    aws_access_key_id="AKIDSIMGATETEST",
    aws_secret_access_key="moto-test-secret",
    region_name=region,
)
iam = session.client("iam", endpoint_url=endpoint)
role = iam.create_role(
    RoleName="funk-" + name,
    AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                       "Action": "sts:AssumeRole"}],
    }),
)["Role"]["Arn"]

code = io.BytesIO()
with zipfile.ZipFile(code, "w") as z:
    z.writestr("index.py", "def handler(event, context):\n    return event\n")
fn = session.client("lambda", endpoint_url=endpoint).create_function(
    FunctionName=name,
    Runtime="python3.12",
    Role=role,
    Handler="index.handler",
    Code={"ZipFile": code.getvalue()},
)

if answers:
    post("/moto-api/static/lambda-simple/response", {"results": answers, "region": region})

print(fn["FunctionArn"])

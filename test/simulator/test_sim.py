#!/usr/bin/env python3
"""Self-test for maestro_sim.py (standard library only).

Starts the simulator on a random port and checks every feature: seed data,
the nine endpoints (the account-wide list with its filters and paging) and
their errors, auth, rate-limit headers, each fault
key, example replay, the control endpoints, throughput/concurrency, log
hygiene (no secrets) and clean shutdown on SIGTERM. Then, with keys and
certificates from make_test_certs.sh, HTTPS serving and the OAuth JWT Grant
token endpoint (these are skipped, with a note, when `openssl` is missing).

    python3 test/simulator/test_sim.py [--spec maestro.rest.swagger-v1.0.0.json]

Prints "N passed, N failed" and exits non-zero on any failure. The spec is
--spec, else $MAESTRO_SPEC, else the copy in test/contract/spec/; if that
file is missing, that is one failure and the example replay falls back to a
small synthetic spec.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import select
import signal
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIM = HERE / "maestro_sim.py"
MAKE_CERTS = HERE / "make_test_certs.sh"
# DocuSign's OpenAPI file, vendored in the repository (see its NOTICE)
REPO_SPEC = HERE.parent / "contract" / "spec" / "maestro.rest.swagger-v1.0.0.json"

ACCOUNT = "7f09961a-42f9-4c2b-9d5e-3f1f0f6a2b10"
WF1 = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0001"
WF2 = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0002"
WF3 = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0003"
I1, I2, I3, I4 = (f"b5500000-0000-4000-8000-00000000000{n}" for n in range(1, 5))
TOKEN, TOKEN2 = "sim-token", "second-token"
A = f"/v1/accounts/{ACCOUNT}"
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
INSTANCE_FIELDS = {
    "id", "name", "workflow_status", "template_id", "account_id", "started_at", "started_by",
    "started_by_name", "started_by_role", "ended_at", "expires_at", "last_modified_at",
    "canceled_at", "canceled_by", "trigger_inputs", "total_steps", "last_completed_step",
    "last_completed_step_name", "tags", "metadata"}

MINI_SPEC = {
    "openapi": "3.1.0",
    "paths": {"/v1/accounts/{accountId}/workflows": {"get": {
        "operationId": "GetWorkflowsList",
        "responses": {"200": {"$ref": "#/components/responses/WorkflowsListSuccess"}}}}},
    "components": {
        "responses": {"WorkflowsListSuccess": {"content": {"application/json": {
            "examples": {"WorkflowCollectionExample": {
                "$ref": "#/components/examples/WorkflowListExample"}}}}}},
        "examples": {"WorkflowListExample": {"value": {
            "data": [{"id": "9fabc6d2-748b-41c9-8d5e-5fbf2f7e6e72", "status": "active"}],
            "response_metadata": {"total_items": 1}}}}},
}


# --------------------------------------------------------------------------
# Tiny test framework
# --------------------------------------------------------------------------

class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, cond: bool, detail: Any = "") -> bool:
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)
        return cond


R = Results()
check = R.check


class Sim:
    """A running simulator process plus HTTP helpers."""

    def __init__(self, spec: Path | None, log_file: Path, extra: list[str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        scheme = "https" if ssl_context is not None else "http"
        args = [sys.executable, str(SIM), "--port", "0", "--token", TOKEN2,
                "--log-file", str(log_file), "--quiet", *(extra or [])]
        if spec is not None:
            args += ["--spec", str(spec)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline().strip() if ready else ""
        m = re.fullmatch(rf"maestro simulator listening on {scheme}://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"simulator did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(m.group(1))
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self.opener = urllib.request.build_opener(*handlers)

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
             raw: bytes | None = None, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, dict, Any]:
        status, headers, data = self.call(method, path, body, **kw)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return status, headers, parsed

    def reset(self) -> None:
        self.call("POST", "/__sim/reset", token=None)


def is_problem(name: str, status: int, headers: dict, body: Any, expect: int) -> None:
    check(f"{name}: status {expect}", status == expect, status)
    check(f"{name}: problem+json", headers.get("content-type") == "application/problem+json",
          headers.get("content-type"))
    ok = isinstance(body, dict) and body.get("status") == expect and {
        "type", "title", "status", "detail", "instance", "timestamp", "request_id"} <= body.keys()
    check(f"{name}: RFC 9457 body", ok, body)
    if ok:
        check(f"{name}: request_id 0HN...", body["request_id"].startswith("0HN"), body)


def is_legacy(name: str, status: int, body: Any, message: str) -> None:
    check(f"{name}: status 404", status == 404, status)
    check(f"{name}: legacy body", isinstance(body, dict) and body.get("error") == message
          and body.get("code") == "404" and "timestamp" in body, body)


# --------------------------------------------------------------------------
# Feature tests
# --------------------------------------------------------------------------

def test_health_and_auth(sim: Sim) -> None:
    status, _, body = sim.call("GET", "/__sim/health", token=None)
    check("health", status == 200 and body == b"ok", (status, body))
    for name, token in (("missing", None), ("bad", "nope")):
        status, headers, body = sim.call("GET", f"{A}/workflows", token=token)
        check(f"auth {name}: 401", status == 401, status)
        check(f"auth {name}: text/plain", headers.get("content-type", "").startswith("text/plain"),
              headers.get("content-type"))
        check(f"auth {name}: body", body == b"Unauthorized - Please provide a valid access token.",
              body)
    status, _, _ = sim.call("GET", f"{A}/workflows", token=TOKEN2)
    check("auth: extra --token accepted", status == 200, status)
    status, _, _ = sim.call("GET", f"{A}/workflows", headers={"Authorization": "Basic x"},
                            token=None)
    check("auth: non-bearer scheme rejected", status == 401, status)
    _, _, log = sim.json("GET", "/__sim/requests?path_contains=/workflows", token=None)
    check("auth recorded in log", [e["auth"] for e in log] == ["missing", "bad", "ok", "bad"],
          [e["auth"] for e in log])


def test_workflows(sim: Sim) -> None:
    status, headers, body = sim.json("GET", f"{A}/workflows")
    check("workflows: 200 json", status == 200 and headers["content-type"] == "application/json",
          (status, headers.get("content-type")))
    data = body["data"]
    check("workflows: 3 seed ids", [w["id"] for w in data] == [WF1, WF2, WF3], data)
    check("workflows: schema fields", all(set(w) == {"id", "name", "account_id", "status",
                                                     "metadata"} for w in data), data)
    check("workflows: names/statuses",
          [(w["name"], w["status"]) for w in data] == [("Customer Onboarding", "active"),
                                                      ("Vendor Approval", "active"),
                                                      ("Legacy NDA", "inactive")], data)
    check("workflows: metadata fields", all(set(w["metadata"]) == {
        "created_at", "created_by", "modified_at", "modified_by"} for w in data), data)
    check("workflows: 7-digit timestamp present",
          any(w["metadata"]["modified_at"] == "2025-05-13T21:01:05.4823174Z" for w in data))
    check("workflows: response_metadata", {"request_id", "response_timestamp",
                                           "response_duration_ms"} <= body["response_metadata"].keys(),
          body["response_metadata"])
    for flt, n in (("active", 2), ("inactive", 1), ("archived", 0)):
        _, _, body = sim.json("GET", f"{A}/workflows?status={flt}")
        check(f"workflows ?status={flt}", len(body["data"]) == n, body)
    status, headers, body = sim.json("GET", f"{A}/workflows?status=paused")
    is_problem("workflows bad status", status, headers, body, 400)
    check("workflows bad status: errors target", body.get("errors", [{}])[0].get("target") == "status",
          body)


def test_account_and_ids(sim: Sim) -> None:
    other = "11111111-2222-4333-8444-555555555555"
    status, _, body = sim.json("GET", f"/v1/accounts/{other}/workflows")
    is_legacy("other account", status, body, "Account not found")
    status, headers, body = sim.json("GET", "/v1/accounts/not-a-uuid/workflows")
    is_problem("malformed account id", status, headers, body, 400)
    status, _, body = sim.json("GET", f"/v1/accounts/{{{ACCOUNT.upper()}}}/workflows")
    check("braced upper-case account id accepted", status == 200, status)
    unknown = "a4490cd8-4a4f-4b4e-9a0c-1c5b0e6e0099"
    for path in (f"{A}/workflows/{unknown}/trigger-requirements", f"{A}/workflows/{unknown}/instances",
                 f"{A}/workflows/{unknown}/instances/{I1}"):
        status, headers, body = sim.json("GET", path)
        is_legacy(f"unknown workflow {path[-30:]}", status, body, "Workflow not found")
    for path in (f"{A}/workflows/{unknown}/actions/pause",
                 f"{A}/workflows/{unknown}/instances/{I1}/actions/cancel"):
        status, _, body = sim.json("POST", path)
        is_legacy(f"unknown workflow POST {path[-25:]}", status, body, "Workflow not found")
    status, headers, body = sim.json("GET", f"{A}/workflows/xyz/instances")
    is_problem("malformed workflow id", status, headers, body, 400)
    check("malformed workflow id: target", body["errors"][0]["target"] == "workflowId", body)
    status, headers, body = sim.json("GET", f"{A}/workflows/{WF1}/instances/xyz")
    is_problem("malformed instance id", status, headers, body, 400)
    status, headers, body = sim.json("DELETE", f"{A}/workflows")
    check("wrong method: 405 + Allow", status == 405 and headers.get("allow") == "GET",
          (status, headers))


def test_trigger_requirements(sim: Sim) -> None:
    status, _, body = sim.json("GET", f"{A}/workflows/{WF1}/trigger-requirements")
    check("trigger-req: 200", status == 200, status)
    check("trigger-req: fields", {"trigger_id", "trigger_event_type", "trigger_http_config",
                                  "trigger_input_schema", "metadata"} <= body.keys(), body)
    check("trigger-req: HTTP POST", body["trigger_event_type"] == "HTTP"
          and body["trigger_http_config"]["method"] == "POST", body)
    check("trigger-req: own url", body["trigger_http_config"]["url"]
          == f"{sim.base}{A}/workflows/{WF1}/actions/trigger", body["trigger_http_config"])
    check("trigger-req: schema", body["trigger_input_schema"] == [
        {"field_name": "Name", "field_data_type": "String"},
        {"field_name": "Email", "field_data_type": "String"},
        {"field_name": "Company", "field_data_type": "String", "default_value": "ACME Corp"}],
        body["trigger_input_schema"])
    _, _, body = sim.json("GET", f"{A}/workflows/{WF2}/trigger-requirements")
    check("trigger-req wf2: Urgent default false",
          body["trigger_input_schema"][2] == {"field_name": "Urgent", "field_data_type": "Boolean",
                                              "default_value": False}, body)
    status, _, body = sim.json("GET", f"{A}/workflows/{WF3}/trigger-requirements")
    check("trigger-req wf3 (inactive): 200", status == 200 and len(body["trigger_input_schema"]) == 1,
          body)


def test_seed_instances(sim: Sim) -> None:
    status, _, body = sim.json("GET", f"{A}/workflows/{WF1}/instances")
    check("instances wf1: 200", status == 200, status)
    data = body["data"]
    check("instances wf1: order", [i["id"] for i in data] == [I1, I2, I3], data)
    check("instances wf1: names", [i["name"] for i in data] == [
        "Onboard ada@example.com", "Onboard bob@example.com", "Onboard carol@example.com"], data)
    check("instances wf1: statuses", [i["workflow_status"] for i in data]
          == ["Completed", "In Progress", "Canceled"], data)
    check("instance 1: every spec field", INSTANCE_FIELDS <= data[0].keys(),
          INSTANCE_FIELDS - data[0].keys())
    check("instance 1: ended_at set", data[0]["ended_at"] is not None, data[0])
    check("instance 1: metadata keys", set(data[0]["metadata"]) == {
        "workflow_created_by", "workflow_version", "workflow_metadata_id"}, data[0])
    check("instance 2: in progress fields", data[1]["ended_at"] is None
          and data[1]["last_completed_step_name"], data[1])
    check("instance 2: undeclared field", data[1].get("priority") == "high", data[1])
    check("instance 3: trigger_input (singular)", "trigger_input" in data[2]
          and "trigger_inputs" not in data[2], data[2])
    check("instance 3: canceled fields", data[2]["canceled_at"] and data[2]["canceled_by"], data[2])
    check("instances: template_id = workflow", all(i["template_id"] == WF1 for i in data), data)
    check("instances: response_metadata", "request_id" in body["response_metadata"], body)
    _, _, body = sim.json("GET", f"{A}/workflows/{WF3}/instances")
    check("instances wf3: empty", body["data"] == [], body)
    status, _, body = sim.json("GET", f"{A}/workflows/{WF2}/instances/{I4}")
    check("get instance 4", status == 200 and body["name"] == "Approve PO-1001"
          and body["workflow_status"] == "In Progress", body)
    status, headers, body = sim.json("GET", f"{A}/workflows/{WF1}/instances/{I4}")
    is_problem("instance under wrong workflow", status, headers, body, 404)
    status, headers, body = sim.json("GET", f"{A}/workflows/{WF1}/instances/"
                                             "b5500000-0000-4000-8000-0000000000ff")
    is_problem("unknown instance", status, headers, body, 404)


def test_trigger(sim: Sim) -> None:
    path = f"{A}/workflows/{WF1}/actions/trigger"
    inputs = {"Name": "Dan", "Email": "dan@example.com"}
    status, _, body = sim.json("POST", path, {"instance_name": "Onboard dan", "trigger_inputs": inputs})
    check("trigger: 201", status == 201, (status, body))
    iid = body.get("instance_id", "")
    check("trigger: uuid4 instance_id", bool(UUID4_RE.match(iid)), iid)
    url_re = (rf"^{re.escape(sim.base)}/api/maestro/v1/accounts/{ACCOUNT}/instances/{iid}"
              r"/execution\?mtid=[0-9a-f]+&mtsec=[A-Za-z0-9_\-]+$")
    check("trigger: instance_url", bool(re.match(url_re, body.get("instance_url", ""))), body)
    status, _, inst = sim.json("GET", f"{A}/workflows/{WF1}/instances/{iid}")
    check("triggered instance: stored", status == 200 and inst["name"] == "Onboard dan"
          and inst["workflow_status"] == "In Progress" and inst["trigger_inputs"] == inputs
          and inst["template_id"] == WF1 and inst["started_by"] and inst["started_at"]
          and inst["ended_at"] is None, inst)
    _, _, body = sim.json("GET", f"{A}/workflows/{WF1}/instances")
    check("triggered instance: listed last", body["data"][-1]["id"] == iid, body["data"][-1])
    _, _, log = sim.json("GET", "/__sim/requests?path_contains=/actions/trigger", token=None)
    check("trigger: log instance_name", log[-1]["instance_name"] == "Onboard dan"
          and log[-1]["body"]["trigger_inputs"] == inputs, log[-1])

    status, headers, body = sim.json("POST", path, raw=b"{not json",
                                     headers={"Content-Type": "application/json"})
    is_problem("trigger: invalid JSON", status, headers, body, 400)
    status, headers, body = sim.json("POST", path, {"trigger_inputs": inputs})
    is_problem("trigger: no instance_name", status, headers, body, 400)
    check("trigger: FIELD_REQUIRED instance_name", body.get("errors") == [
        {"code": "FIELD_REQUIRED", "message": "instance_name is required",
         "target": "instance_name"}], body)
    status, _, body = sim.json("POST", path, {"instance_name": "", "trigger_inputs": inputs})
    check("trigger: empty instance_name", status == 400
          and body["errors"][0]["target"] == "instance_name", body)
    status, _, body = sim.json("POST", path, {"instance_name": "x"})
    check("trigger: no trigger_inputs", status == 400 and body["errors"] == [
        {"code": "FIELD_REQUIRED", "message": "trigger_inputs is required",
         "target": "trigger_inputs"}], body)
    status, _, body = sim.json("POST", path, {"instance_name": "x", "trigger_inputs": [1]})
    check("trigger: trigger_inputs not object", status == 400
          and body["errors"][0]["target"] == "trigger_inputs", body)
    status, _, body = sim.json("POST", f"{A}/workflows/{WF2}/actions/trigger",
                               {"instance_name": "x", "trigger_inputs": {}})
    check("trigger: one error per missing field (defaults skipped)", status == 400 and [
        (e["code"], e["target"]) for e in body["errors"]] == [("FIELD_REQUIRED", "Amount"),
                                                               ("FIELD_REQUIRED", "Approver")],
          body)
    status, headers, body = sim.json("POST", f"{A}/workflows/{WF3}/actions/trigger",
                                     {"instance_name": "x", "trigger_inputs": {"Email": "a@b"}})
    is_problem("trigger inactive workflow", status, headers, body, 409)


def test_pause_resume(sim: Sim) -> None:
    base = f"{A}/workflows/{WF2}"
    status, _, body = sim.json("POST", f"{base}/actions/pause")
    check("pause: 200 paused", status == 200 and body == {"status": "paused"}, (status, body))
    status, headers, body = sim.json("POST", f"{base}/actions/pause")
    is_problem("pause twice", status, headers, body, 409)
    _, _, body = sim.json("GET", f"{A}/workflows")
    check("paused workflow still reports status active",
          [w["status"] for w in body["data"] if w["id"] == WF2] == ["active"], body)
    trig = {"instance_name": "PO-2", "trigger_inputs": {"Amount": 5, "Approver": "x"}}
    status, headers, body = sim.json("POST", f"{base}/actions/trigger", trig)
    is_problem("trigger paused workflow", status, headers, body, 409)
    check("trigger paused: title Conflict + detail", body.get("title") == "Conflict"
          and "paused" in body.get("detail", ""), body)
    status, _, body = sim.json("POST", f"{base}/actions/resume")
    check("resume: 200 active", status == 200 and body == {"status": "active"}, (status, body))
    status, headers, body = sim.json("POST", f"{base}/actions/resume")
    is_problem("resume when not paused", status, headers, body, 409)
    status, _, _ = sim.json("POST", f"{base}/actions/trigger", trig)
    check("trigger after resume: 201", status == 201, status)


def test_cancel(sim: Sim) -> None:
    path = f"{A}/workflows/{WF1}/instances/{I2}/actions/cancel"
    status, _, body = sim.json("POST", path)
    check("cancel: 200 message", status == 200 and body == {
        "message": f"Successfully cancelled the workflow instance {I2} in {WF1}"}, body)
    _, _, inst = sim.json("GET", f"{A}/workflows/{WF1}/instances/{I2}")
    check("cancel: instance Canceled", inst["workflow_status"] == "Canceled"
          and inst["canceled_at"] and inst["canceled_by"], inst)
    status, headers, body = sim.json("POST", path)
    is_problem("cancel twice", status, headers, body, 409)
    status, headers, body = sim.json("POST", f"{A}/workflows/{WF1}/instances/{I1}/actions/cancel")
    is_problem("cancel Completed", status, headers, body, 409)
    status, headers, body = sim.json(
        "POST", f"{A}/workflows/{WF1}/instances/b5500000-0000-4000-8000-0000000000ff/actions/cancel")
    is_problem("cancel unknown instance", status, headers, body, 404)


def test_rate_limit(sim: Sim) -> None:
    sim.reset()
    remaining = []
    for _ in range(3):
        _, headers, _ = sim.call("GET", f"{A}/workflows")
        remaining.append(int(headers["x-ratelimit-remaining"]))
        check("rate: limit 3000", headers.get("x-ratelimit-limit") == "3000", headers)
    check("rate: remaining decrements from 2999", remaining == [2999, 2998, 2997], remaining)
    reset_at = int(headers["x-ratelimit-reset"])
    check("rate: reset = next top of hour", reset_at % 3600 == 0
          and 0 < reset_at - time.time() <= 3600, reset_at)
    _, headers, _ = sim.call("GET", f"{A}/workflows", token=None)
    check("rate: headers on 401 too", headers.get("x-ratelimit-remaining") == "2996", headers)
    sim.call("POST", "/__sim/ratelimit", {"remaining": 1}, token=None)
    _, h1, _ = sim.call("GET", f"{A}/workflows")
    _, h2, _ = sim.call("GET", f"{A}/workflows")
    check("rate: never below 0", (h1["x-ratelimit-remaining"], h2["x-ratelimit-remaining"])
          == ("0", "0"), (h1, h2))
    sim.call("POST", "/__sim/ratelimit", {"enforce": True}, token=None)
    status, headers, body = sim.json("GET", f"{A}/workflows")
    is_problem("rate: enforced 429", status, headers, body, 429)
    check("rate: 429 Retry-After", int(headers.get("retry-after", "0")) > 0, headers)
    sim.reset()
    _, headers, _ = sim.call("GET", f"{A}/workflows")
    check("rate: reset restores", headers["x-ratelimit-remaining"] == "2999", headers)
    check("rate: no X-BurstLimit-* unless asked for",
          not any(k.startswith("x-burstlimit") for k in headers), headers)
    _, _, out = sim.json("POST", "/__sim/ratelimit",
                         {"reset": 1700000000, "burst_limit": 500, "remaining": 0}, token=None)
    check("rate: control answer", out == {"limit": 3000, "remaining": 0, "enforce": False,
                                          "reset": 1700000000, "burst_limit": 500,
                                          "burst_remaining": 500}, out)
    _, h1, _ = sim.call("GET", f"{A}/workflows")
    check("rate: reset as set", h1.get("x-ratelimit-reset") == "1700000000", h1)
    check("rate: burst headers count down",
          (h1.get("x-burstlimit-limit"), h1.get("x-burstlimit-remaining")) == ("500", "499"), h1)
    sim.call("POST", "/__sim/ratelimit", {"burst_remaining": 0, "reset": None}, token=None)
    _, h2, _ = sim.call("GET", f"{A}/workflows")
    check("rate: burst never below 0", h2.get("x-burstlimit-remaining") == "0", h2)
    check("rate: reset null is the next top of the hour",
          int(h2["x-ratelimit-reset"]) % 3600 == 0, h2)
    sim.call("POST", "/__sim/ratelimit", {"burst_limit": None}, token=None)
    _, h3, _ = sim.call("GET", f"{A}/workflows")
    check("rate: burst_limit null stops the headers", "x-burstlimit-limit" not in h3, h3)
    sim.call("DELETE", "/__sim/requests", token=None)
    sim.call("GET", f"{A}/workflows", headers={"Via": "1.1 tinyproxy (tinyproxy/1.11.1)"})
    sim.call("GET", f"{A}/workflows")
    _, _, log = sim.json("GET", "/__sim/requests", token=None)
    check("rate: the log records the Via header",
          [e.get("via") for e in log] == ["1.1 tinyproxy (tinyproxy/1.11.1)", None], log)
    sim.reset()
    _, headers, _ = sim.call("GET", f"{A}/workflows")
    check("rate: reset forgets reset and burst",
          int(headers["x-ratelimit-reset"]) % 3600 == 0
          and not any(k.startswith("x-burstlimit") for k in headers), headers)


def raw_get(sim: Sim, path: str, timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=timeout)
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    return conn.getresponse()


def test_faults(sim: Sim) -> None:
    sim.reset()
    wf = f"{A}/workflows"
    seq = [sim.call("GET", f"/_fault/key=t1;status=503;times=2{wf}")[0] for _ in range(4)]
    check("fault times=2 then normal", seq == [503, 503, 200, 200], seq)
    status, headers, body = sim.json("GET", f"/_fault/key=t1b;status=503;times=1{wf}")
    is_problem("fault 503 rfc", status, headers, body, 503)
    check("fault 5xx type about:blank", body.get("type") == "about:blank", body)
    check("fault rfc instance = stripped path", body.get("instance") == wf, body)
    seq = [sim.call("GET", f"/_fault/status=500{wf}")[0] for _ in range(3)]
    check("fault without times: always", seq == [500, 500, 500], seq)
    seq = [sim.call("GET", f"/_fault/key=shared;status=502;times=1/v1/accounts/{ACCOUNT}/{p}")[0]
           for p in ("workflows", "workflows")]
    check("fault key shared across paths", seq == [502, 200], seq)
    get_status = sim.call("GET", f"/_fault/key=m;method=POST;status=500{wf}/{WF1}/instances")[0]
    post_status = sim.call("POST", f"/_fault/key=m;method=POST;status=500{wf}/{WF2}/actions/pause")[0]
    check("fault method=POST", (get_status, post_status) == (200, 500),
          (get_status, post_status))
    _, _, faults = sim.json("GET", "/__sim/faults", token=None)
    check("fault counters", faults.get("t1") == 4 and faults.get("m") == 1, faults)

    t0 = time.time()
    status = sim.call("GET", f"/_fault/latency_ms=300{wf}")[0]
    check("fault latency_ms", status == 200 and time.time() - t0 >= 0.29, time.time() - t0)
    # a request held by latency_ms across a reset is served, but not logged
    # in the new window
    held = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    held.sendall(f"GET /_fault/key=held;latency_ms=500{wf} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
    time.sleep(0.1)
    sim.call("POST", "/__sim/reset", token=None)
    answer = b""
    while True:
        chunk = held.recv(65536)
        if not chunk:
            break
        answer += chunk
    held.close()
    _, _, logged = sim.json("GET", "/__sim/requests?path_contains=key=held", token=None)
    check("fault latency_ms across a reset: served, not logged after it",
          answer.startswith(b"HTTP/1.1 200") and logged == [], (answer[:40], logged))
    status, headers, body = sim.json("GET", f"/_fault/status=429;retry_after=7{wf}")
    check("fault retry_after", status == 429 and headers.get("retry-after") == "7", headers)
    status, headers, body = sim.json("GET", f"/_fault/status=500;format=legacy{wf}")
    check("fault format=legacy", status == 500 and body.get("code") == "500"
          and "error" in body and "timestamp" in body, body)
    status, headers, body = sim.call("GET", f"/_fault/status=503;format=text{wf}")
    check("fault format=text", status == 503 and headers["content-type"].startswith("text/plain")
          and body == b"Service Unavailable", (headers, body))
    status, headers, body = sim.call("GET", f"/_fault/status=504;format=html{wf}")
    check("fault format=html", status == 504 and headers["content-type"].startswith("text/html")
          and b"<h1>504" in body, body)
    status, headers, body = sim.call("GET", f"/_fault/html=1{wf}")
    check("fault html=1 (502)", status == 502 and body ==
          b"<html><body><h1>502 Bad Gateway</h1></body></html>", (status, body))
    status, headers, body = sim.call("GET", f"/_fault/malformed=1{wf}")
    bad = False
    try:
        json.loads(body)
    except ValueError:
        bad = True
    check("fault malformed=1", status == 200 and bad
          and headers["content-type"] == "application/json", body)
    status, headers, body = sim.call("GET", f"/_fault/oversize=300000{wf}")
    check("fault oversize=N: N bytes", status == 200 and len(body) == 300000
          and headers["content-length"] == "300000", len(body))
    try:
        check("fault oversize=N: valid JSON", isinstance(json.loads(body)["data"], list))
    except ValueError as e:
        check("fault oversize=N: valid JSON", False, e)
    status, headers, body = sim.call("GET", f"/_fault/empty=1{wf}")
    check("fault empty=1", status == 200 and body == b"" and headers["content-length"] == "0",
          (status, body))
    text = urllib.parse.quote('{"custom": "body; with / chars"}', safe="")
    status, headers, body = sim.call("GET", f"/_fault/status=418;body={text}{wf}")
    check("fault body= exact", status == 418 and body == b'{"custom": "body; with / chars"}',
          (status, body))
    enc = urllib.parse.quote("key=enc;status=503;times=1", safe="")
    status = sim.call("GET", f"/_fault/{enc}{wf}")[0]
    check("fault spec fully URL-encoded", status == 503, status)
    status, _, body = sim.call("GET", f"/_fault/bogus=1{wf}")
    check("fault unknown key -> 400", status == 400 and b"bogus" in body, (status, body))

    # Connection-level faults need a raw client.
    try:
        raw_get(sim, f"/_fault/reset=1{wf}").read()
        outcome = "response"
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as e:
        outcome = type(e).__name__
    check("fault reset=1: no response", outcome in ("ConnectionResetError", "RemoteDisconnected"),
          outcome)
    try:
        r = raw_get(sim, f"/_fault/truncate=1{wf}")
        r.read()
        outcome = f"complete {r.status}"
    except http.client.IncompleteRead as e:
        outcome = "incomplete"
        check("fault truncate=1: partial JSON", e.partial.startswith(b'{"data":'), e.partial[:40])
    check("fault truncate=1: IncompleteRead", outcome == "incomplete", outcome)
    t0 = time.time()
    drip_body = urllib.parse.quote('{"a":12345}', safe="")
    # 11 bytes at 200 ms each: the body takes 2.2 s, the headers come at once
    # (the bounds leave a busy machine room either side)
    r = raw_get(sim, f"/_fault/drip_ms=200;body={drip_body}{wf}")
    t_headers = time.time() - t0
    body = r.read()
    t_body = time.time() - t0
    check("fault drip_ms: headers immediately", t_headers < 1.5, t_headers)
    check("fault drip_ms: body slow and intact", body == b'{"a":12345}' and t_body >= 2.0,
          (body, t_body))
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("POST", f"/_fault/drip_ms=20{A}/workflows/{WF1}/actions/pause",
                 headers={"Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    status, body = r.status, r.read()
    check("fault drip_ms on normal response", status == 200 and body == b'{"status":"paused"}'
          and time.time() - t0 >= 0.3, (status, body, time.time() - t0))

    # after=N: the first N matching requests are served normally
    seq = [sim.call("GET", f"/_fault/key=aft;after=2;times=1;status=500{wf}")[0] for _ in range(4)]
    check("fault after=2;times=1", seq == [200, 200, 500, 200], seq)
    seq = [sim.call("GET", f"/_fault/key=aft2;after=1;status=503{wf}")[0] for _ in range(3)]
    check("fault after=1 without times: always after", seq == [200, 503, 503], seq)
    # strip=a,b: the normal answer (the request processed) without those members
    status, _, body = sim.json("GET", f"/_fault/strip=name,created_at{wf}")
    check("fault strip: members gone at any depth", status == 200 and body["data"]
          and all("name" not in w and "created_at" not in w["metadata"]
                  and "modified_at" in w["metadata"] and "id" in w for w in body["data"]), body)
    status, _, body = sim.json("POST", f"/_fault/strip=instance_id,instance_url{wf}/{WF2}/actions/trigger",
                               {"instance_name": "stripped", "trigger_inputs": {"Amount": 1,
                                                                                "Approver": "a@x"}})
    check("fault strip on a trigger: 201 without the ids", status == 201 and isinstance(body, dict)
          and "instance_id" not in body and "instance_url" not in body and "request_id" in body,
          (status, body))
    _, _, listed = sim.json("GET", f"{wf}/{WF2}/instances")
    check("fault strip: the trigger was processed",
          any(i["name"] == "stripped" for i in listed["data"]), listed)
    status, _, body = sim.call("GET", f"/_fault/strip=x;status=418;body=%7B%22x%22%3A1%7D{wf}")
    check("fault strip leaves a faulted body alone", status == 418 and body == b'{"x":1}', body)

    _, _, log = sim.json("GET", "/__sim/requests?path_contains=/_fault/", token=None)
    check("faulted requests logged", len(log) >= 25 and all(e["fault"] for e in log), len(log))
    reset_entries = [e for e in log if "reset=1" in e["path"]]
    check("reset fault logged with status 0", reset_entries and reset_entries[0]["status"] == 0,
          reset_entries)


def test_account_instances(sim: Sim) -> None:
    path = f"{A}/workflow-instances"
    status, headers, body = sim.json("GET", path)
    check("account instances: 200 json", status == 200
          and headers["content-type"] == "application/json", (status, headers))
    check("account instances: top-level fields", {"instances", "total_set_size",
                                                  "result_set_size"} <= body.keys(), body)
    check("account instances: every seed instance, in creation order",
          [i["id"] for i in body["instances"]] == [I1, I2, I3, I4], body)
    check("account instances: sizes", body["total_set_size"] == 4
          and body["result_set_size"] == 4, body)
    check("account instances: one page, no ctoken", "ctoken" not in body, body)
    check("account instances: the element names its workflow",
          [i["workflow_id"] for i in body["instances"]] == [WF1, WF1, WF1, WF2], body)
    check("account instances: elements are WorkflowInstance objects",
          INSTANCE_FIELDS <= body["instances"][0].keys() and body["instances"][1]["priority"] == "high",
          body["instances"][0])
    status, _, _ = sim.json("GET", path, token="nope")
    check("account instances: needs auth", status == 401, status)

    # filters
    def ids(query: str) -> list[str]:
        status, _, body = sim.json("GET", f"{path}?{query}")
        return [i["id"] for i in body["instances"]] if status == 200 else [f"HTTP {status}"]
    check("filter status (any case)", ids("status=in%20progress") == [I2, I4], ids("status=in%20progress"))
    check("filter one workflow", ids(f"workflow_definition_id={WF2}") == [I4])
    check("filter workflows repeated", ids(f"workflow_definition_id={WF2}&workflow_definition_id={WF1}")
          == [I1, I2, I3, I4])
    check("filter started_by_id", ids("started_by_id=0ccdbb0b-a72e-452f-95f0-9f19654cb620")
          == [I1, I2, I3, I4] and ids("started_by_id=11111111-2222-4333-8444-555555555555") == [])
    check("filters combine", ids(f"status=Completed&workflow_definition_id={WF1}") == [I1])
    for bad, target in (("workflow_definition_id=xyz", "workflow_definition_id"),
                        ("started_by_id=Jane", "started_by_id"), ("page_size=0", "page_size"),
                        ("page_size=1001", "page_size"), ("page_size=x", "page_size"),
                        ("ctoken=forged", "ctoken")):
        status, headers, body = sim.json("GET", f"{path}?{bad}")
        is_problem(f"account instances ?{bad}", status, headers, body, 400)
        check(f"account instances ?{bad}: target", body.get("errors", [{}])[0].get("target") == target,
              body)

    # paging: 24 instances, 5 a page, an opaque ctoken, a stable total
    sim.json("POST", "/__sim/instances", {"workflow_id": WF3, "count": 20, "status": "Completed"},
             token=None)
    seen, pages, token, totals = [], 0, None, set()
    while pages < 10:
        q = "page_size=5" + (f"&ctoken={urllib.parse.quote(token)}" if token else "")
        status, _, body = sim.json("GET", f"{path}?{q}")
        if status != 200:
            check("paging: each page 200", False, (status, body))
            break
        pages += 1
        seen += [i["id"] for i in body["instances"]]
        totals.add(body["total_set_size"])
        check(f"paging: page {pages} result_set_size", body["result_set_size"] == len(body["instances"]),
              body["result_set_size"])
        if pages == 1:
            # an instance created during the walk does not change the total
            sim.json("POST", "/__sim/instances", {"workflow_id": WF3, "count": 1}, token=None)
        token = body.get("ctoken")
        if not token:
            break
    check("paging: 5 pages, the instance created meanwhile included", pages == 5 and len(seen) == 25,
          (pages, len(seen)))
    check("paging: no duplicates", len(set(seen)) == len(seen), seen)
    check("paging: total evaluated at the first page", totals == {24}, totals)
    status, _, body = sim.json("GET", f"{path}?page_size=5")
    first = body["ctoken"]
    status, _, body = sim.json("GET", f"{path}?status=Completed&page_size=5&ctoken={urllib.parse.quote(first)}")
    check("paging: a ctoken of other filters is refused", status == 400, status)

    # how the last page ends, and what names the workflow
    for mode, expect in (("empty", ""), ("null", None)):
        status, _, conf = sim.json("POST", "/__sim/account-instances", {"last_ctoken": mode}, token=None)
        status, _, body = sim.json("GET", f"{path}?workflow_definition_id={WF1}")
        check(f"last page ctoken {mode}", "ctoken" in body and body["ctoken"] == expect, body.get("ctoken"))
    sim.json("POST", "/__sim/account-instances", {"workflow_id_field": None}, token=None)
    _, _, body = sim.json("GET", path)
    check("workflow_id_field null: elements do not name their workflow",
          all("workflow_id" not in i for i in body["instances"]), body["instances"][0])
    sim.json("POST", "/__sim/account-instances", {"workflow_id_field": "workflow_definition_id"},
             token=None)
    _, _, body = sim.json("GET", path)
    check("workflow_id_field renamed", body["instances"][0].get("workflow_definition_id") == WF1,
          body["instances"][0])
    status, _, body = sim.call("POST", "/__sim/account-instances", raw=b'{"enabled": "yes"}',
                               token=None)
    check("control account-instances: bad body 400", status == 400, (status, body))
    _, _, conf = sim.json("POST", "/__sim/account-instances", {"enabled": False}, token=None)
    check("control account-instances: returns the settings", conf == {
        "enabled": False, "last_ctoken": "null", "workflow_id_field": "workflow_definition_id"}, conf)
    status, _, body = sim.json("GET", path)
    is_legacy("account instances off", status, body, "Resource not found")
    sim.reset()
    _, _, conf = sim.json("GET", "/__sim/account-instances", token=None)
    check("reset restores the endpoint", conf == {"enabled": True, "last_ctoken": "absent",
                                                  "workflow_id_field": "workflow_id"}, conf)


def test_no_account_instances_flag(tmp: Path) -> None:
    sim = Sim(None, tmp / "noacct.log", ["--no-account-instances"])
    try:
        status, _, body = sim.json("GET", f"{A}/workflow-instances")
        is_legacy("--no-account-instances", status, body, "Resource not found")
        sim.json("POST", "/__sim/account-instances", {"enabled": True}, token=None)
        status, _, _ = sim.json("GET", f"{A}/workflow-instances")
        check("--no-account-instances: the control turns it on", status == 200, status)
        sim.reset()
        status, _, _ = sim.json("GET", f"{A}/workflow-instances")
        check("--no-account-instances: reset turns it off again", status == 404, status)
    finally:
        sim.proc.kill()
        sim.proc.wait()


def test_examples(sim: Sim, real_spec: bool) -> None:
    status, headers, body = sim.json("GET", f"/_example/200/WorkflowListExample{A}/workflows")
    check("example: 200 json", status == 200 and headers["content-type"] == "application/json",
          (status, headers))
    check("example: value", isinstance(body, dict) and body["response_metadata"]["total_items"]
          >= 1, body)
    status, _, body = sim.json("GET", f"/_example/201/WorkflowCollectionExample{A}/workflows")
    check("example: alias name from inline map + custom status", status == 201
          and "data" in body, (status, body))
    status, headers, body = sim.call("GET", f"/_example/200/NoSuchExample{A}/workflows")
    check("example: unknown -> 404 text", status == 404
          and headers["content-type"].startswith("text/plain"), (status, body))
    _, _, listing = sim.json("GET", "/__sim/examples", token=None)
    rows = {(r["name"], r["operation_id"], r["status"]) for r in listing}
    check("examples listing", ("WorkflowListExample", "GetWorkflowsList", 200) in rows, listing)
    if real_spec:
        check("examples listing covers all 8 operations", len({r["operation_id"] for r in listing
                                                               if r["operation_id"]}) == 8, listing)
        status, _, body = sim.json("GET", f"/_example/200/multipleWorkflowInstances{A}/x")
        check("example: inline path alias", status == 200 and "trigger_input" in body["data"][0],
              body)
        status, _, body = sim.json("GET", f"/_example/201/WorkflowInstanceInfoExample{A}/x")
        check("example: trigger example", status == 201 and "instance_url" in body, body)


def test_control(sim: Sim) -> None:
    sim.reset()
    _, _, log = sim.json("GET", "/__sim/requests", token=None)
    check("reset clears log", log == [], log)
    sim.call("GET", f"{A}/workflows")
    sim.call("GET", f"{A}/workflows/{WF1}/instances")
    sim.call("POST", f"{A}/workflows/{WF1}/actions/pause")
    _, _, log = sim.json("GET", "/__sim/requests", token=None)
    check("log entry fields", set(log[0]) >= {"seq", "time", "method", "path", "status", "auth",
                                              "body", "instance_name"}, log[0])
    check("log paths", [e["path"] for e in log] == [f"{A}/workflows", f"{A}/workflows/{WF1}/instances",
                                                    f"{A}/workflows/{WF1}/actions/pause"], log)
    _, _, only = sim.json("GET", f"/__sim/requests?since={log[0]['seq']}", token=None)
    check("log since", [e["seq"] for e in only] == [log[1]["seq"], log[2]["seq"]], only)
    _, _, only = sim.json("GET", "/__sim/requests?method=post", token=None)
    check("log method filter", len(only) == 1 and only[0]["method"] == "POST", only)
    _, _, n = sim.call("GET", f"/__sim/count?path_contains={WF1}", token=None)
    check("count path_contains", n == b"2", n)
    _, _, n = sim.call("GET", "/__sim/count?method=GET&path_contains=/instances", token=None)
    check("count method+path", n == b"1", n)
    sim.call("DELETE", "/__sim/requests", token=None)
    _, _, n = sim.call("GET", "/__sim/count", token=None)
    check("DELETE /__sim/requests", n == b"0", n)

    status, _, body = sim.json("POST", "/__sim/instances",
                               {"workflow_id": WF2, "count": 500, "status": "Completed"}, token=None)
    check("bulk create", status == 200 and body["created"] == 500, body)
    _, _, lst = sim.json("GET", f"{A}/workflows/{WF2}/instances")
    check("bulk instances listed", len(lst["data"]) == 501
          and all(i["workflow_status"] == "Completed" and i["ended_at"] for i in lst["data"][1:]),
          len(lst["data"]))
    status, _, inst = sim.json("POST", f"/__sim/instances/{I4}/status",
                               {"workflow_status": "Completed"}, token=None)
    check("status change", status == 200 and inst["workflow_status"] == "Completed"
          and inst["ended_at"], inst)
    status, headers, _ = sim.json("POST", f"{A}/workflows/{WF2}/instances/{I4}/actions/cancel")
    check("cancel after status change -> 409", status == 409, status)
    status, _, _ = sim.call("POST", "/__sim/instances/b5500000-0000-4000-8000-0000000000ff/status",
                            {"workflow_status": "Failed"}, token=None)
    check("status change unknown instance -> 404", status == 404, status)
    status, _, body = sim.call("POST", "/__sim/reset", token=None)
    check("reset -> ok", status == 200 and body == b"ok", body)
    _, _, lst = sim.json("GET", f"{A}/workflows/{WF2}/instances")
    check("reset restores seed instances", [i["id"] for i in lst["data"]] == [I4], lst)
    status, _, _ = sim.call("POST", f"{A}/workflows/{WF1}/actions/pause")
    check("reset clears pause", status == 200, status)
    sim.reset()


def test_throughput(sim: Sim) -> None:
    sim.reset()
    path = f"{A}/workflows/{WF1}/instances/{I1}"
    conns, per = 20, 150
    errors: list[Any] = []

    def worker() -> None:
        c = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=30)
        try:
            for _ in range(per):
                c.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = conns * per / (time.time() - t0)
    # Speed is for the benchmarks (test/bench/); this only catches a simulator
    # gone pathologically slow (it serves about 1,500 req/s with both cores
    # busy, 3,000 idle)
    minimum = float(os.environ.get("MAESTRO_SIM_MIN_RPS", "300"))
    print(f"throughput: {rate:.0f} req/s over {conns} keep-alive connections", flush=True)
    check("throughput no errors", not errors, errors[:5])
    check(f"throughput >= {minimum:.0f} req/s", rate >= minimum, rate)

    # Hundreds of keep-alive connections open at the same time.
    n = 300
    barrier = threading.Barrier(n)
    results: list[Any] = []

    def hold() -> None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=30)
            c.request("GET", "/__sim/health")
            first = c.getresponse().read()
            barrier.wait(timeout=60)
            c.request("GET", f"{A}/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
            r = c.getresponse()
            r.read()
            results.append((first, r.status))
            c.close()
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))

    threads = [threading.Thread(target=hold) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(1 for r in results if r == (b"ok", 200))
    check(f"{n} concurrent keep-alive connections", ok == n,
          [r for r in results if r != (b"ok", 200)][:5])
    sim.reset()


def test_no_secrets_logged(sim: Sim, log_file: Path) -> None:
    _, _, body = sim.json("POST", f"{A}/workflows/{WF1}/actions/trigger",
                          {"instance_name": "secret check",
                           "trigger_inputs": {"Name": "x", "Email": "y"}})
    mtsec = urllib.parse.parse_qs(urllib.parse.urlparse(body["instance_url"]).query)["mtsec"][0]
    sim.call("GET", f"{A}/workflows", token="wrong-secret-token")
    # the log has caught up once it holds the last request's line
    text = wait_for_log(log_file, f"GET {A}/workflows -> 401")
    check("log file written", "/actions/trigger" in text and f"GET {A}/workflows -> 401" in text,
          text[-300:])
    for secret in (TOKEN, TOKEN2, "wrong-secret-token", mtsec):
        check("secret not in log file", secret not in text, secret[:4] + "...")


def wait_for_log(log_file: Path, marker: str, timeout: float = 60) -> str:
    """The log file's text once it holds `marker` (or after `timeout` s)."""
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = log_file.read_text() if log_file.exists() else ""
        if marker in text:
            break
        time.sleep(0.05)
    return text


def test_shutdown(sim: Sim) -> None:
    sim.proc.send_signal(signal.SIGTERM)
    try:
        rc = sim.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        rc = "timeout"
    check("SIGTERM: clean exit 0", rc == 0, rc)
    stderr = sim.proc.stderr.read()
    check("quiet: no stderr output", stderr == "", stderr[-500:])
    with socket.socket() as s:
        refused = s.connect_ex(("127.0.0.1", sim.port)) != 0
    check("SIGTERM: port closed", refused)


# --------------------------------------------------------------------------
# Redirect fault and /__sim/echo-auth (no openssl needed)
# --------------------------------------------------------------------------

def test_redirect(sim: Sim) -> None:
    sim.reset()
    echo = f"{sim.base}/__sim/echo-auth"
    target = urllib.parse.quote(echo, safe="")
    _, _, last = sim.json("GET", "/__sim/echo-auth/last", token=None)
    check("echo-auth: nothing yet", last == {"count": 0, "authorization_present": False,
                                             "method": None, "body_present": False}, last)
    status, _, body = sim.json("GET", "/__sim/echo-auth", token="echo-secret")
    _, _, last = sim.json("GET", "/__sim/echo-auth/last", token=None)
    check("echo-auth: Authorization seen", status == 200
          and body == {"authorization_present": True} and last["count"] == 1
          and last["authorization_present"] is True and last["method"] == "GET", (body, last))
    check("echo-auth: value never revealed", b"echo-secret" not in json.dumps(last).encode())
    sim.call("POST", "/__sim/echo-auth", raw=b"x=1", token=None)
    _, _, last = sim.json("GET", "/__sim/echo-auth/last", token=None)
    check("echo-auth: no Authorization", last == {"count": 2, "authorization_present": False,
                                                  "method": "POST", "body_present": True}, last)
    sim.reset()

    for spec, expect in ((f"redirect={target};status=307", 307), (f"redirect={target}", 302),
                         (f"redirect={target};status=301", 301),
                         (f"redirect={target};status=308", 308)):
        conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
        conn.request("GET", f"/_fault/{spec}{A}/workflows",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        check(f"redirect fault {expect}: status + Location", r.status == expect
              and r.getheader("Location") == echo and body == b"",
              (r.status, r.getheader("Location"), body))
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("POST", f"/_fault/redirect={target};status=307/oauth/token",
                 body=b"grant_type=x", headers={"Content-Type":
                                                "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    r.read()
    conn.close()
    check("redirect fault on /oauth/token", r.status == 307
          and r.getheader("Location") == echo, r.status)
    _, _, last = sim.json("GET", "/__sim/echo-auth/last", token=None)
    check("redirect not followed: echo-auth untouched", last["count"] == 0, last)
    status, _, body = sim.call("GET", f"/_fault/redirect={target};status=200{A}/workflows")
    check("redirect fault with non-3xx status -> 400", status == 400, (status, body))
    # A client that follows redirects and keeps the header leaks it; echo-auth shows that.
    status, _, body = sim.json("GET", f"/_fault/key=follow;times=1;redirect={target}"
                                      f"{A}/workflows")
    _, _, last = sim.json("GET", "/__sim/echo-auth/last", token=None)
    check("echo-auth detects a client that follows and forwards Authorization",
          status == 200 and last["count"] == 1 and last["authorization_present"] is True,
          (status, last))
    sim.reset()
    _, _, last = sim.json("GET", "/__sim/echo-auth/last", token=None)
    check("reset clears echo-auth", last["count"] == 0, last)


# --------------------------------------------------------------------------
# HTTPS and the OAuth JWT Grant (need the openssl CLI)
# --------------------------------------------------------------------------

IK = "9a2b0c1d-1111-4222-8333-444455556666"
USER1 = "5e6f7a8b-aaaa-4bbb-8ccc-ddddeeeeffff"
USER2 = "6f7a8b9c-bbbb-4ccc-8ddd-eeeeffff0000"
UNKNOWN_USER = "7a8b9c0d-cccc-4ddd-8eee-ffff00001111"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FORM = "application/x-www-form-urlencoded"
# Tokens live long enough that one minted at the start of a step outlives the
# step on a loaded machine; the natural-expiry check waits for it (a lower
# bound), and /__sim/oauth/lifetime is tested with a 1 s lifetime.
LIFETIME = 10


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: Path, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An RS256 JWT signed with `openssl dgst -sha256 -sign`."""
    head = header if header is not None else {"alg": "RS256", "typ": "JWT"}
    signing_input = f"{b64u(json.dumps(head).encode())}.{b64u(json.dumps(claims).encode())}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return f"{signing_input}.{b64u(sig)}"


def jwt_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": IK, "sub": USER1, "aud": "account-d.docusign.com",
                              "iat": now, "exp": now + 3600,
                              "scope": "signature aow_manage impersonation"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def token_request(sim: Sim, assertion: str | None = None, grant: str | None = JWT_GRANT,
                  ctype: str = FORM, prefix: str = "", method: str = "POST",
                  raw: bytes | None = None) -> tuple[int, dict, Any]:
    if raw is None:
        fields = {k: v for k, v in (("grant_type", grant), ("assertion", assertion)) if v}
        raw = urllib.parse.urlencode(fields).encode()
    return sim.json(method, f"{prefix}/oauth/token", raw=raw if method == "POST" else None,
                    token=None, headers={"Content-Type": ctype, "Accept": "application/json"})


def grant(sim: Sim, key: Path, **over: Any) -> str:
    status, _, body = token_request(sim, sign_jwt(key, jwt_claims(**over)))
    if not (status == 200 and isinstance(body, dict) and "access_token" in body):
        raise AssertionError(f"grant failed: {status} {body}")
    return body["access_token"]


def make_certs(certs: Path) -> bool:
    r = subprocess.run([str(MAKE_CERTS), str(certs)], capture_output=True, text=True)
    check("make_test_certs.sh: exit 0, quiet", r.returncode == 0 and r.stdout == ""
          and r.stderr == "", (r.returncode, r.stdout[-300:], r.stderr[-500:]))
    if r.returncode != 0:
        return False
    names = ("ca.pem", "ca.key", "server.pem", "server.key", "selfsigned.pem", "selfsigned.key",
             "jwt_private.pem", "jwt_private_pkcs1.pem", "jwt_public.pem",
             "jwt_public_pkcs1.pem", "jwt_other_private.pem", "jwt_other_public.pem")
    check("make_test_certs.sh: every file", all((certs / n).is_file() for n in names),
          [n for n in names if not (certs / n).is_file()])
    heads = {n: (certs / n).read_text().splitlines()[0] for n in
             ("jwt_private.pem", "jwt_private_pkcs1.pem", "jwt_public.pem",
              "jwt_public_pkcs1.pem", "jwt_other_private.pem")}
    check("make_test_certs.sh: key formats", heads == {
        "jwt_private.pem": "-----BEGIN PRIVATE KEY-----",
        "jwt_private_pkcs1.pem": "-----BEGIN RSA PRIVATE KEY-----",
        "jwt_public.pem": "-----BEGIN PUBLIC KEY-----",
        "jwt_public_pkcs1.pem": "-----BEGIN RSA PUBLIC KEY-----",
        "jwt_other_private.pem": "-----BEGIN PRIVATE KEY-----"}, heads)
    before = {n: (certs / n).read_bytes() for n in names}
    r = subprocess.run([str(MAKE_CERTS), str(certs)], capture_output=True, text=True)
    check("make_test_certs.sh: idempotent", r.returncode == 0 and r.stdout == r.stderr == ""
          and all((certs / n).read_bytes() == before[n] for n in names), r.stderr)
    return True


def test_key_parsing(certs: Path) -> None:
    """The simulator's own DER reader and RSA check, against openssl's view of the key."""
    sys.path.insert(0, str(HERE))
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    import maestro_sim  # noqa: PLC0415 - the module under test; importing starts nothing

    out = subprocess.run(["openssl", "rsa", "-pubin", "-in", str(certs / "jwt_public.pem"),
                          "-noout", "-modulus"], capture_output=True, text=True, check=True)
    modulus = int(out.stdout.strip().split("=", 1)[1], 16)
    spki = maestro_sim.load_rsa_public_key((certs / "jwt_public.pem").read_text())
    pkcs1 = maestro_sim.load_rsa_public_key((certs / "jwt_public_pkcs1.pem").read_text())
    check("key parse: SPKI n,e", spki == (modulus, 65537), spki[1])
    check("key parse: PKCS#1 n,e = SPKI", pkcs1 == spki)
    other = maestro_sim.load_rsa_public_key((certs / "jwt_other_public.pem").read_text())
    check("key parse: other key differs", other != spki)
    for name in ("jwt_private.pem", "server.pem"):
        try:
            maestro_sim.load_rsa_public_key((certs / name).read_text())
            outcome = "accepted"
        except maestro_sim.PublicKeyError as e:
            outcome = str(e)
        check(f"key parse: {name} refused", outcome != "accepted", outcome)
    msg = b"header.payload"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(certs / "jwt_private.pem")],
                         input=msg, capture_output=True, check=True).stdout
    n, e = spki
    check("rsa verify: good signature", maestro_sim.rsa_sha256_verify(n, e, msg, sig))
    check("rsa verify: other message", not maestro_sim.rsa_sha256_verify(n, e, msg + b"x", sig))
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    check("rsa verify: flipped bit", not maestro_sim.rsa_sha256_verify(n, e, msg, bad))
    check("rsa verify: short signature", not maestro_sim.rsa_sha256_verify(n, e, msg, sig[1:]))
    check("rsa verify: other key", not maestro_sim.rsa_sha256_verify(*other, msg, sig))


def test_startup_errors(certs: Path) -> None:
    cases = [
        ("private key as --oauth-public-key", ["--oauth-public-key",
                                               str(certs / "jwt_private.pem")], "private key"),
        ("missing --oauth-public-key file", ["--oauth-public-key", str(certs / "nope.pem")],
         "nope.pem"),
        ("missing --tls-cert file", ["--tls-cert", str(certs / "nope.pem"),
                                     "--tls-key", str(certs / "server.key")], "tls"),
        ("--tls-cert without --tls-key", ["--tls-cert", str(certs / "server.pem")], "tls-key"),
        ("key not matching cert", ["--tls-cert", str(certs / "server.pem"),
                                   "--tls-key", str(certs / "selfsigned.key")], "tls"),
    ]
    for name, args, word in cases:
        r = subprocess.run([sys.executable, str(SIM), "--port", "0", *args],
                           capture_output=True, text=True, timeout=20)
        check(f"startup error: {name} -> exit 2", r.returncode == 2 and word in r.stderr,
              (r.returncode, r.stderr[-300:]))


def test_https(sim: Sim, certs: Path) -> None:
    ca_ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
        with ca_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version()
    check("https: TLS 1.2+", version in ("TLSv1.2", "TLSv1.3"), version)
    conn = http.client.HTTPSConnection("localhost", sim.port, timeout=10, context=ca_ctx)
    conn.request("GET", "/__sim/health")
    r = conn.getresponse()
    check("https: verified by the test CA (DNS:localhost)", r.status == 200
          and r.read() == b"ok", r.status)
    conn.close()
    status, _, body = sim.json("GET", f"{A}/workflows/{WF1}/trigger-requirements")
    check("https: API with static token", status == 200, status)
    check("https: trigger url is https", body["trigger_http_config"]["url"].startswith(
        f"https://127.0.0.1:{sim.port}/"), body["trigger_http_config"])
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                    urllib.request.HTTPSHandler(
                                        context=ssl.create_default_context())).open(
            f"{sim.base}/__sim/health", timeout=10).read()
        outcome = "accepted"
    except urllib.error.URLError as e:
        outcome = type(e.reason).__name__
    check("https: refused by a client without the test CA",
          outcome == "SSLCertVerificationError", outcome)
    def handshake(max_version: ssl.TLSVersion, seclevel0: bool = False) -> str:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                if seclevel0:  # let our own OpenSSL offer TLS 1.1, so the server must refuse
                    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                    ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = max_version
            with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    return tls.version() or "?"
        except (ssl.SSLError, OSError, ValueError) as e:
            return f"refused: {e}"

    outcome = handshake(ssl.TLSVersion.TLSv1_2)
    check("https: TLS 1.2 client accepted", outcome == "TLSv1.2", outcome)
    outcome = handshake(ssl.TLSVersion.TLSv1_1, seclevel0=True)
    check("https: TLS 1.1 client refused", outcome.startswith("refused"), outcome)
    if "PROTOCOL_VERSION" not in outcome.upper():
        print(f"note: TLS 1.1 was refused by the local client library, not by the server "
              f"({outcome})", flush=True)
    try:
        c = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
        c.request("GET", "/__sim/health")
        outcome = f"answered {c.getresponse().status}"
    except (http.client.HTTPException, OSError) as e:
        outcome = type(e).__name__
    check("https: plain HTTP gets no answer", not outcome.startswith("answered"), outcome)
    status, _, _ = sim.json("GET", "/__sim/health", token=None)
    check("https: still serving after bad handshakes", status == 200, status)
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10):  # never says hello
        t0 = time.time()
        status, _, _ = sim.json("GET", "/__sim/health", token=None)
        # blocked, it would wait out the 10 s handshake timeout
        check("https: a stalled handshake blocks nobody", status == 200
              and time.time() - t0 < 8, (status, time.time() - t0))


def test_selfsigned(certs: Path, tmp: Path) -> None:
    """A self-signed server: refused by a verifying client; PKCS#1 public key end to end."""
    ca_ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    trusting = ssl.create_default_context()
    trusting.check_hostname = False
    trusting.verify_mode = ssl.CERT_NONE
    sim = Sim(None, tmp / "selfsigned.log", ssl_context=trusting, extra=[
        "--tls-cert", str(certs / "selfsigned.pem"), "--tls-key", str(certs / "selfsigned.key"),
        "--oauth-public-key", str(certs / "jwt_public_pkcs1.pem"), "--integration-key", IK])
    try:
        try:
            with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
                with ca_ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                    outcome = "handshake"
        except ssl.SSLCertVerificationError as e:
            outcome = f"refused: {e.verify_message}"
        check("self-signed cert refused by a verifying client", outcome.startswith("refused"),
              outcome)
        # Default --oauth-user is the simulator's own user.
        token = grant(sim, certs / "jwt_private_pkcs1.pem",
                      sub="0ccdbb0b-a72e-452f-95f0-9f19654cb620")
        status = sim.call("GET", f"{A}/workflows", token=token)[0]
        check("PKCS#1 public key + PKCS#1 private key: grant works", status == 200, status)
    finally:
        sim.proc.send_signal(signal.SIGTERM)
        try:
            sim.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.proc.kill()
        stderr = sim.proc.stderr.read()
        check("self-signed sim: no stderr after a refused handshake", stderr == "", stderr[-500:])


def test_oauth(sim: Sim, certs: Path, log_file: Path) -> None:
    sim.reset()
    key = certs / "jwt_private.pem"
    secrets_seen: list[str] = []

    def req(assertion: str | None, **kw: Any) -> tuple[int, dict, Any]:
        if assertion:
            secrets_seen.append(assertion)
        return token_request(sim, assertion, **kw)

    def expect_error(name: str, assertion: str | None, body_expect: dict[str, str],
                     status_expect: int = 400, **kw: Any) -> None:
        status, headers, body = req(assertion, **kw)
        shown = ({**body, "access_token": "..."} if isinstance(body, dict)
                 and "access_token" in body else body)
        check(f"oauth {name}: {status_expect} {body_expect}",
              status == status_expect and body == body_expect
              and headers.get("content-type") == "application/json", (status, shown))

    _, h0, _ = sim.call("GET", f"{A}/workflows")
    status, headers, body = req(sign_jwt(key, jwt_claims()))
    check("oauth grant: 200", status == 200, (status, body))
    check("oauth grant: body", isinstance(body, dict) and set(body) == {
        "access_token", "token_type", "expires_in"} and body["token_type"] == "Bearer"
        and body["expires_in"] == LIFETIME, body)
    check("oauth grant: no-store, json, no X-RateLimit-*",
          headers.get("cache-control") == "no-store"
          and headers.get("content-type") == "application/json"
          and not any(k.startswith("x-ratelimit") for k in headers), headers)
    token1 = body["access_token"]
    secrets_seen.append(token1)
    status, h1, _ = sim.call("GET", f"{A}/workflows", token=token1)
    check("oauth token works on the API", status == 200, status)
    check("oauth token request did not use the API rate limit",
          int(h1["x-ratelimit-remaining"]) == int(h0["x-ratelimit-remaining"]) - 1,
          (h0["x-ratelimit-remaining"], h1["x-ratelimit-remaining"]))
    token2 = grant(sim, certs / "jwt_private_pkcs1.pem", sub=USER2.upper(), iss=IK.upper())
    secrets_seen.append(token2)
    check("oauth: tokens unique, long", token1 != token2 and len(token2) > 500, len(token2))
    check("oauth: second user, upper-case GUIDs, PKCS#1 signer",
          sim.call("GET", f"{A}/workflows", token=token2)[0] == 200)
    _, _, counts = sim.json("GET", "/__sim/oauth/tokens", token=None)
    check("oauth tokens: issued 2 active 2", counts == {"issued": 2, "active": 2}, counts)
    status, _, body = sim.json("POST", "/__sim/oauth/expire", token=None)
    check("oauth expire: 2 expired", status == 200 and body == {"expired": 2}, body)
    for t in (token1, token2):
        status, headers, body = sim.call("GET", f"{A}/workflows", token=t)
        check("oauth expired token -> 401 text", status == 401
              and body == b"Unauthorized - Please provide a valid access token."
              and headers["content-type"].startswith("text/plain"), (status, body))
    _, _, counts = sim.json("GET", "/__sim/oauth/tokens", token=None)
    check("oauth tokens after expire: issued 2 active 0",
          counts == {"issued": 2, "active": 0}, counts)
    _, _, log = sim.json("GET", f"/__sim/requests?path_contains={A}/workflows", token=None)
    check("oauth: expired token logged as auth=expired", log[-1]["auth"] == "expired", log[-1])

    # Natural expiry: take a token now, check it at the end.
    t_issued = time.time()
    token3 = grant(sim, key)
    secrets_seen.append(token3)
    check("oauth new token after expire works",
          sim.call("GET", f"{A}/workflows", token=token3)[0] == 200)

    now = int(time.time())
    other = certs / "jwt_other_private.pem"
    ig = "invalid_grant"
    expect_error("wrong key", sign_jwt(other, jwt_claims()),
                 {"error": ig, "error_description": "no_valid_keys_or_signatures"})
    good = sign_jwt(key, jwt_claims())
    h, p, s = good.split(".")
    forged = f"{h}.{b64u(json.dumps(jwt_claims(sub=USER2)).encode())}.{s}"
    expect_error("payload changed after signing", forged,
                 {"error": ig, "error_description": "no_valid_keys_or_signatures"})
    expect_error("unknown iss", sign_jwt(key, jwt_claims(iss=UNKNOWN_USER)),
                 {"error": ig, "error_description": "issuer_not_found"})
    expect_error("missing iss", sign_jwt(key, jwt_claims(iss=None)),
                 {"error": ig, "error_description": "issuer_not_found"})
    expect_error("unknown sub", sign_jwt(key, jwt_claims(sub=UNKNOWN_USER)),
                 {"error": ig, "error_description": "user_not_found"})
    expect_error("wrong aud", sign_jwt(key, jwt_claims(aud="account.docusign.com")),
                 {"error": ig, "error_description": "invalid_audience"})
    expect_error("aud with scheme",
                 sign_jwt(key, jwt_claims(aud="https://account-d.docusign.com")),
                 {"error": ig, "error_description": "invalid_audience"})
    expect_error("expired assertion", sign_jwt(key, jwt_claims(iat=now - 4000, exp=now - 400)),
                 {"error": ig, "error_description": "expired_assertion"})
    expect_error("exp - iat > 3600", sign_jwt(key, jwt_claims(iat=now, exp=now + 3601)),
                 {"error": ig, "error_description": "assertion_lifetime_too_long"})
    expect_error("iat in the future", sign_jwt(key, jwt_claims(iat=now + 120, exp=now + 600)),
                 {"error": ig, "error_description": "iat_in_future"})
    expect_error("missing exp", sign_jwt(key, jwt_claims(exp=None)),
                 {"error": ig, "error_description": "invalid_exp"})
    expect_error("string iat", sign_jwt(key, jwt_claims(iat=str(now))),
                 {"error": ig, "error_description": "invalid_iat"})
    expect_error("nbf in the future", sign_jwt(key, jwt_claims(nbf=now + 600)),
                 {"error": ig, "error_description": "assertion_not_yet_valid"})
    status, _, _ = req(sign_jwt(key, jwt_claims(iat=now + 30, nbf=now + 30, exp=now + 600)))
    check("oauth: iat/nbf 30 s ahead tolerated", status == 200, status)
    expect_error("scope without aow_manage",
                 sign_jwt(key, jwt_claims(scope="signature impersonation")),
                 {"error": "invalid_scope", "error_description": "missing_scopes: aow_manage"})
    expect_error("no scope", sign_jwt(key, jwt_claims(scope=None)),
                 {"error": "invalid_scope",
                  "error_description": "missing_scopes: signature aow_manage"})
    none_head = b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    expect_error("alg none", f"{none_head}.{p}.",
                 {"error": ig, "error_description": "unsupported_algorithm"})
    expect_error("alg HS256", sign_jwt(key, jwt_claims(), {"alg": "HS256", "typ": "JWT"}),
                 {"error": ig, "error_description": "unsupported_algorithm"})
    expect_error("typ not JWT", sign_jwt(key, jwt_claims(), {"alg": "RS256", "typ": "JWS"}),
                 {"error": ig, "error_description": "malformed_assertion"})
    for name, bad in (("two parts", f"{h}.{p}"), ("garbage", "not-a-jwt"),
                      ("bad base64", f"{h}.{p}!.{s}"), ("payload not JSON",
                                                       f"{h}.{b64u(b'[1,')}.{s}")):
        expect_error(f"malformed: {name}", bad,
                     {"error": ig, "error_description": "malformed_assertion"})
    expect_error("grant_type authorization_code", good,
                 {"error": "unsupported_grant_type",
                  "error_description": "unsupported_grant_type"}, grant="authorization_code")
    expect_error("no grant_type", good, {"error": "invalid_request",
                                         "error_description": "missing_grant_type"}, grant=None)
    expect_error("no assertion", None, {"error": "invalid_request",
                                        "error_description": "missing_assertion"})
    expect_error("JSON body", good, {"error": "invalid_request",
                                     "error_description": "unsupported_content_type"},
                 ctype="application/json",
                 raw=json.dumps({"grant_type": JWT_GRANT, "assertion": good}).encode())
    expect_error("repeated parameter", good, {"error": "invalid_request",
                                              "error_description": "duplicate_parameter"},
                 raw=f"grant_type={JWT_GRANT}&assertion={good}&assertion={good}".encode())
    status, headers, body = token_request(sim, method="GET")
    check("oauth GET /oauth/token -> 405 Allow POST", status == 405
          and headers.get("allow") == "POST" and body == {
              "error": "invalid_request", "error_description": "method_not_allowed"},
          (status, headers.get("allow"), body))
    status, _, _ = req(good, ctype=FORM + "; charset=utf-8")
    check("oauth: form content type with charset accepted", status == 200, status)

    # Consent
    status, _, body = sim.json("POST", "/__sim/oauth/consent",
                               {"user": USER1, "consented": False}, token=None)
    check("consent off", status == 200 and body == {"user": USER1, "consented": False}, body)
    expect_error("no consent", sign_jwt(key, jwt_claims()), {"error": "consent_required"})
    status = req(sign_jwt(key, jwt_claims(sub=USER2)))[0]
    check("consent is per user", status == 200, status)
    sim.json("POST", "/__sim/oauth/consent", {"user": USER1.upper(), "consented": True},
             token=None)
    status = req(sign_jwt(key, jwt_claims()))[0]
    check("consent back on", status == 200, status)
    for bad_body in ({"user": "x", "consented": True}, {"user": USER1, "consented": "no"}, []):
        status = sim.call("POST", "/__sim/oauth/consent", bad_body, token=None)[0]
        check(f"consent bad body {bad_body!r} -> 400", status == 400, status)

    # Faults on the token endpoint
    status, _, body = req(good, prefix="/_fault/key=tok;status=500;times=1")
    check("fault on /oauth/token: 500", status == 500, (status, body))
    status, _, body = req(good, prefix="/_fault/key=tok;status=500;times=1")
    check("fault on /oauth/token: then normal", status == 200, (status, body))
    t0 = time.time()
    status, _, _ = req(good, prefix="/_fault/latency_ms=300")
    check("fault latency on /oauth/token", status == 200 and time.time() - t0 >= 0.29,
          (status, time.time() - t0))

    # Natural expiry of token3 (lifetime LIFETIME seconds from when the
    # simulator issued it, which is after t_issued): poll for the 401, which
    # must not come before t_issued + LIFETIME
    deadline = t_issued + LIFETIME + 60
    time.sleep(max(0.0, t_issued + LIFETIME - 0.5 - time.time()))
    while True:
        status, _, body = sim.call("GET", f"{A}/workflows", token=token3)
        t_answered = time.time()  # after the simulator judged the token
        if status != 200 or t_answered > deadline:
            break
        time.sleep(0.05)
    check("oauth token expires after --token-lifetime", status == 401
          and body == b"Unauthorized - Please provide a valid access token."
          and t_answered >= t_issued + LIFETIME, (status, body, t_answered - t_issued))

    # The log never holds an assertion or a token.
    _, _, log = sim.json("GET", "/__sim/requests?path_contains=/oauth/token", token=None)
    check("oauth requests logged", len(log) >= 30, len(log))
    ok_entries = [e for e in log if e["oauth"] == "issued"]
    check("oauth log: outcome + redacted body", ok_entries and ok_entries[0]["body"] == {
        "grant_type": JWT_GRANT, "assertion": "[redacted]"} and ok_entries[0]["status"] == 200,
        ok_entries[:1])
    check("oauth log: error outcome", any(e["oauth"] == "invalid_grant/issuer_not_found"
                                          for e in log), [e["oauth"] for e in log])
    check("oauth log: JSON body not logged", all(e["body"] is None or e["body"].get("assertion")
                                                 in (None, "[redacted]") for e in log))
    status = sim.call("POST", "/oauth/token?assertion=query-secret&x=1", raw=b"", token=None)[0]
    _, _, all_log = sim.call("GET", "/__sim/requests", token=None)
    check("oauth log: query values redacted", b"query-secret" not in all_log
          and b"/oauth/token?assertion=[redacted]&x=[redacted]" in all_log, status)
    # the log file has caught up once it holds the last request's line
    text = wait_for_log(log_file, "/oauth/token?assertion=[redacted]&x=[redacted]") + all_log.decode()
    check("oauth log file holds the last request", "/oauth/token?assertion=[redacted]" in text)
    leaked = [x[:12] for x in secrets_seen + ["query-secret"] if x and x in text]
    check(f"no assertion/token in logs ({len(secrets_seen)} secrets)", not leaked, leaked)
    for part in {x.split(".")[2] for x in secrets_seen if x.count(".") == 2 and x.split(".")[2]}:
        if part in text:
            check("no JWT signature in logs", False, part[:12])
            break

    # The token lifetime control
    status, _, body = sim.json("POST", "/__sim/oauth/lifetime", {"seconds": 1}, token=None)
    check("oauth lifetime control: set 1 s", status == 200 and body == {"seconds": 1}, body)
    status, _, body = req(sign_jwt(key, jwt_claims()))
    check("oauth lifetime control: expires_in 1", status == 200 and (body.get("expires_in") if isinstance(body, dict) else None) == 1, body)
    short = body.get("access_token", "") if isinstance(body, dict) else ""
    deadline = time.time() + 60
    status = 0
    while time.time() < deadline:
        status = sim.call("GET", f"{A}/workflows", token=short)[0]
        if status == 401:
            break
        time.sleep(0.1)
    check("oauth lifetime control: the token expires", status == 401, status)
    status, _, body = sim.json("POST", "/__sim/oauth/lifetime", {"seconds": None}, token=None)
    check("oauth lifetime control: null", status == 200 and body == {"seconds": None}, body)
    status, _, body = req(sign_jwt(key, jwt_claims()))
    check("oauth lifetime control: back to --token-lifetime",
          status == 200 and (body.get("expires_in") if isinstance(body, dict) else None) == LIFETIME, body)
    for bad_body in ({"seconds": 0}, {"seconds": "5"}, {"seconds": True}, {}, []):
        status = sim.call("POST", "/__sim/oauth/lifetime", bad_body, token=None)[0]
        check(f"oauth lifetime control: bad body {bad_body!r} -> 400", status == 400, status)
    sim.json("POST", "/__sim/oauth/lifetime", {"seconds": 7}, token=None)
    sim.reset()
    status, _, body = req(sign_jwt(key, jwt_claims()))
    check("oauth lifetime control: reset restores --token-lifetime",
          status == 200 and (body.get("expires_in") if isinstance(body, dict) else None) == LIFETIME, body)

    # Reset
    sim.reset()
    _, _, counts = sim.json("GET", "/__sim/oauth/tokens", token=None)
    check("reset: token counts 0", counts == {"issued": 0, "active": 0}, counts)
    token4 = grant(sim, key)
    sim.json("POST", "/__sim/oauth/consent", {"user": USER1, "consented": False}, token=None)
    sim.reset()
    status, _, _ = sim.call("GET", f"{A}/workflows", token=token4)
    check("reset: issued tokens forgotten", status == 401, status)
    status = req(sign_jwt(key, jwt_claims()))[0]
    check("reset: consent restored", status == 200, status)


def run_tls_oauth_tests(tmp: Path) -> None:
    if shutil.which("openssl") is None:
        print("note: openssl not found: HTTPS and OAuth JWT checks skipped "
              "(install the openssl package to run them)", flush=True)
        return
    certs = tmp / "certs"
    if not make_certs(certs):
        return
    for test in (lambda: test_key_parsing(certs), lambda: test_startup_errors(certs)):
        try:
            test()
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            check("test crashed", False, repr(e))
    ca_ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    log_file = tmp / "oauth-sim.log"
    sim = Sim(None, log_file, ssl_context=ca_ctx, extra=[
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
        "--oauth-public-key", str(certs / "jwt_public.pem"), "--integration-key", IK,
        "--oauth-user", USER1, "--oauth-user", USER2, "--token-lifetime", str(LIFETIME)])
    try:
        for test in (lambda: test_https(sim, certs), lambda: test_oauth(sim, certs, log_file),
                     lambda: test_selfsigned(certs, tmp)):
            try:
                test()
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                check("test crashed", False, repr(e))
        sim.proc.send_signal(signal.SIGTERM)
        try:
            rc = sim.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        check("https sim: SIGTERM exit 0", rc == 0, rc)
        stderr = sim.proc.stderr.read()
        check("https sim: no stderr output (bad handshakes are quiet)", stderr == "",
              stderr[-500:])
    finally:
        if sim.proc.poll() is None:
            sim.proc.kill()


# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=os.environ.get("MAESTRO_SPEC"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(args.spec) if args.spec else REPO_SPEC
        real_spec = spec.is_file()
        check("the OpenAPI file exists", real_spec, str(spec))
        if not real_spec:
            spec = Path(tmp) / "mini-spec.json"
            spec.write_text(json.dumps(MINI_SPEC))
            print("note: real spec not found; using a synthetic spec for example replay")
        log_file = Path(tmp) / "sim.log"
        sim = Sim(spec, log_file)
        try:
            tests = [
                lambda: test_health_and_auth(sim), lambda: test_workflows(sim),
                lambda: test_account_and_ids(sim), lambda: test_trigger_requirements(sim),
                lambda: test_seed_instances(sim), lambda: test_account_instances(sim),
                lambda: test_trigger(sim),
                lambda: test_pause_resume(sim), lambda: test_cancel(sim),
                lambda: test_rate_limit(sim), lambda: test_faults(sim),
                lambda: test_examples(sim, real_spec), lambda: test_control(sim),
                lambda: test_throughput(sim), lambda: test_no_secrets_logged(sim, log_file),
                lambda: test_redirect(sim),
            ]
            for test in tests:
                sim.reset()
                try:
                    test()
                except Exception as e:  # noqa: BLE001 - a crash is one failure, keep going
                    import traceback
                    traceback.print_exc()
                    check("test crashed", False, repr(e))
            test_no_account_instances_flag(Path(tmp))
            test_shutdown(sim)
        finally:
            if sim.proc.poll() is None:
                sim.proc.kill()
        run_tls_oauth_tests(Path(tmp))
    print(f"{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Self-test for maestro_sim.py (standard library only).

Starts the simulator on a random port and checks every feature: seed data,
the eight endpoints and their errors, auth, rate-limit headers, each fault
key, example replay, the control endpoints, throughput/concurrency, log
hygiene (no secrets) and clean shutdown on SIGTERM.

    python3 test/simulator/test_sim.py [--spec maestro.rest.swagger-v1.0.0.json]

Prints "N passed, N failed" and exits non-zero on any failure. Without
--spec (or $MAESTRO_SPEC, or the shared copy) it replays examples from a
small synthetic spec instead.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIM = HERE / "maestro_sim.py"
SHARED_SPEC = Path("/work/shared/maestro-api/maestro.rest.swagger-v1.0.0.json")

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

    def __init__(self, spec: Path, log_file: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SIM), "--port", "0", "--token", TOKEN2, "--spec", str(spec),
             "--log-file", str(log_file), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().strip() if ready else ""
        m = re.fullmatch(r"maestro simulator listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"simulator did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

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
    r = raw_get(sim, f"/_fault/drip_ms=40;body={drip_body}{wf}")
    t_headers = time.time() - t0
    body = r.read()
    t_body = time.time() - t0
    check("fault drip_ms: headers immediately", t_headers < 0.3, t_headers)
    check("fault drip_ms: body slow and intact", body == b'{"a":12345}' and t_body >= 0.35,
          (body, t_body))
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("POST", f"/_fault/drip_ms=20{A}/workflows/{WF1}/actions/pause",
                 headers={"Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    status, body = r.status, r.read()
    check("fault drip_ms on normal response", status == 200 and body == b'{"status":"paused"}'
          and time.time() - t0 >= 0.3, (status, body, time.time() - t0))

    _, _, log = sim.json("GET", "/__sim/requests?path_contains=/_fault/", token=None)
    check("faulted requests logged", len(log) >= 25 and all(e["fault"] for e in log), len(log))
    reset_entries = [e for e in log if "reset=1" in e["path"]]
    check("reset fault logged with status 0", reset_entries and reset_entries[0]["status"] == 0,
          reset_entries)


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
    minimum = float(os.environ.get("MAESTRO_SIM_MIN_RPS", "2000"))
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
    time.sleep(0.1)
    text = log_file.read_text()
    check("log file written", "/actions/trigger" in text, text[-300:])
    for secret in (TOKEN, TOKEN2, "wrong-secret-token", mtsec):
        check("secret not in log file", secret not in text, secret[:4] + "...")


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

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=os.environ.get("MAESTRO_SPEC"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(args.spec) if args.spec else SHARED_SPEC
        real_spec = spec.is_file()
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
                lambda: test_seed_instances(sim), lambda: test_trigger(sim),
                lambda: test_pause_resume(sim), lambda: test_cancel(sim),
                lambda: test_rate_limit(sim), lambda: test_faults(sim),
                lambda: test_examples(sim, real_spec), lambda: test_control(sim),
                lambda: test_throughput(sim), lambda: test_no_secrets_logged(sim, log_file),
            ]
            for test in tests:
                sim.reset()
                try:
                    test()
                except Exception as e:  # noqa: BLE001 - a crash is one failure, keep going
                    import traceback
                    traceback.print_exc()
                    check("test crashed", False, repr(e))
            test_shutdown(sim)
        finally:
            if sim.proc.poll() is None:
                sim.proc.kill()
    print(f"{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())

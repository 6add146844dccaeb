"""The baseline of the fan-out case: the article's design, forwarding a group's alerts one by one."""

import os

import requests
from flask import Flask, jsonify, request

app = Flask(__name__)
URL = os.environ["ALERT24_API_URL"]
session = requests.Session()


@app.post("/alertmanager")
def alertmanager():
    data = request.get_json()
    for alert in data["alerts"]:
        body = {
            "integration_key": "bench",
            "event_action": "trigger" if alert["status"] == "firing" else "resolve",
            "dedup_key": alert["fingerprint"],
            "payload": {"summary": alert["labels"]["alertname"], "severity": "warning", "source": "prometheus"},
        }
        session.post(URL, json=body, timeout=10).raise_for_status()
    return jsonify(ok=True)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")

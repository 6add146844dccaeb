"""The ceiling: a bare Flask app that only authenticates and parses the webhook, forwarding nothing."""

import hmac
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
SECRET = os.environ["SHARED_SECRET"].encode()


@app.post("/alertmanager")
def alertmanager():
    offered = request.headers.get("Authorization", "").partition(" ")[2].encode()
    if not hmac.compare_digest(offered, SECRET):
        return jsonify(error="unauthorized"), 401
    data = request.get_json()
    return jsonify(ok=True, events=len(data["alerts"]))


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")

"""docs/deploy.md and deploy/: the alert rules are valid rule files naming the metrics the
guide promises, and the guide covers every setting the compose env file takes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "deploy.md").read_text()


def _rule_files() -> list[dict]:
    inline = re.findall(r"```yaml\n(.*?)```", GUIDE, re.S)
    assert inline, "the guide shows example rules"
    return [yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text()),
            *(yaml.safe_load(block) for block in inline)]


def test_the_alert_rules_are_rule_files_on_the_promised_metrics():
    for rules in _rule_files():
        exprs = []
        for group in rules["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
                assert rule["expr"] and re.fullmatch(r"\d+[smh]", rule["for"])
                assert rule["labels"]["severity"] in ("page", "ticket")
                exprs.append(rule["expr"])
        text = "\n".join(exprs)
        assert re.search(r'peerlink_job_last_success_timestamp_seconds\{job=~?"[^"]*breach_sweep', text)
        assert "peerlink_webhook_deliveries_pending" in text
        assert "peerlink_webhook_oldest_pending_age_seconds" in text
        # Balanced brackets: a cheap guard against a broken expression.
        for expr in exprs:
            for a, b in ("()", "[]", "{}"):
                assert expr.count(a) == expr.count(b), expr


def test_the_guide_covers_every_setting_of_the_env_file():
    example = (ROOT / "deploy" / ".env.example").read_text()
    for name in re.findall(r"^(\w+)=", example, re.M):
        assert name in GUIDE, name
    for topic in ("TLS", "PEERLINK_TRUSTED_PROXIES", "Secrets", "Write throughput", "max_connections",
                  "/readyz"):
        assert topic in GUIDE, topic

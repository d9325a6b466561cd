"""Retention selection (pure), its settings, and the metrics fed by the flows."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from mssbridge.config import MetricsSection, RetentionSection
from mssbridge.metrics import BridgeMetrics
from mssbridge.policy.retention import (
    DAY,
    MAILBOX_KINDS,
    MATRIX_KINDS,
    PurgeKind,
    RetentionPolicy,
    cutoffs,
    is_past,
    summary,
)

NOW = 1_800_000_000.0


def test_cutoffs_per_kind_follow_their_period() -> None:
    cuts = cutoffs(NOW, RetentionPolicy(content_days=90, audit_days=183, rejected_days=30))
    assert set(cuts) == set(PurgeKind)
    for kind in (PurgeKind.OUTBOX, PurgeKind.INBOX, PurgeKind.MAP_OUT, PurgeKind.MAP_IN):
        assert cuts[kind] == NOW - 90 * DAY
    assert cuts[PurgeKind.DELIVERY] == NOW - 90 * DAY
    for kind in (PurgeKind.OUTBOX_REJECTED, PurgeKind.INBOX_REJECTED, PurgeKind.DELIVERY_REJECTED):
        assert cuts[kind] == NOW - 30 * DAY
    assert cuts[PurgeKind.AUDIT] == NOW - 183 * DAY
    assert cuts[PurgeKind.MATRIX_TXN] == NOW - 7 * DAY


def test_is_past_is_strict_at_the_boundary() -> None:
    policy = RetentionPolicy(content_days=10)
    boundary = NOW - 10 * DAY
    assert is_past(PurgeKind.OUTBOX, boundary - 0.001, NOW, policy)
    assert not is_past(PurgeKind.OUTBOX, boundary, NOW, policy)
    assert not is_past(PurgeKind.AUDIT, boundary - 1, NOW, policy)  # audit keeps longer


def test_mailbox_and_matrix_kinds() -> None:
    assert {PurgeKind.INBOX, PurgeKind.INBOX_REJECTED} == MAILBOX_KINDS
    assert {PurgeKind.MAP_IN} == MATRIX_KINDS
    assert RetentionPolicy(content_days=90).room_max_lifetime_ms == 90 * 86_400_000
    assert summary({PurgeKind.AUDIT: 4}).endswith("audit=4")
    with pytest.raises(ValueError):
        cutoffs(0, RetentionPolicy())


def test_settings_defaults_and_validation() -> None:
    r = RetentionSection()
    assert (r.content_days, r.audit_days, r.rejected_days) == (90, 183, 30)
    assert (r.schedule_minutes, r.batch) == (60, 1000)
    with pytest.raises(ValueError):
        RetentionSection(content_days=0)
    assert MetricsSection().listen == "127.0.0.1:9464"
    assert MetricsSection(listen="").listen == ""
    for bad in ("9464", "localhost:", "h:70000", "h:x"):
        with pytest.raises(ValueError):
            MetricsSection(listen=bad)


def _value(metrics: BridgeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_closing_rows_feeds_counters_latency_and_reasons() -> None:
    metrics = BridgeMetrics(CollectorRegistry())
    metrics.received("out", 3)
    metrics.closed("out", "done", created_at=100.0, now=102.5)
    metrics.closed("in", "done", created_at=100.0, now=100.2)
    metrics.closed("out", "rejected", created_at=100.0, reason="5.1.1")
    metrics.closed("in", "retry", created_at=100.0)
    metrics.closed("in", "shunted", created_at=100.0)
    metrics.closed("in", "pending", created_at=100.0)  # still open: nothing counted
    total = "mssbridge_messages_total"
    assert _value(metrics, total, direction="out", outcome="received") == 3
    assert _value(metrics, total, direction="out", outcome="sent") == 1
    assert _value(metrics, total, direction="in", outcome="relayed") == 1
    assert _value(metrics, total, direction="in", outcome="retried") == 1
    assert _value(metrics, total, direction="in", outcome="shunted") == 1
    assert _value(metrics, "mssbridge_rejections_total", direction="out", reason="5.1.1") == 1
    assert _value(metrics, "mssbridge_relay_latency_seconds_sum", direction="out") == 2.5
    assert _value(metrics, "mssbridge_relay_latency_seconds_bucket", direction="in", le="0.25") == 1
    # A registry of its own: a second instance starts from zero.
    assert _value(BridgeMetrics(), total, direction="out", outcome="received") is None
    metrics.purge_counts({PurgeKind.AUDIT: 5, PurgeKind.OUTBOX: 0})
    assert _value(metrics, "mssbridge_purged_rows_total", kind="audit") == 5
    assert b"mssbridge_purged_rows_total" in metrics.render()

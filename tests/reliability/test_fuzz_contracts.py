"""Mutation fuzzing of the decoder and the state merge (2,000 cases here; 100,000 in the long run)."""

from __future__ import annotations

from broker_filter_proving.reliability.fuzz import DEPTHS, Fuzzer

CASES = 2_000


def test_decoder_and_merge_keep_their_contracts_on_mutated_alerts(ztf_seeds, lsst_seeds):
    report = Fuzzer([ztf_seeds, lsst_seeds]).run(CASES, base_seed=20_251_125)
    assert report.cases == CASES
    assert report.failure_count == 0, "\n\n".join(f"seed {f.seed} ({f.depth}/{f.mutation}):\n{f.error}" for f in report.failures[:3])
    # The harness must reach every layer: alerts that decode and merge, and each kind of rejection.
    assert report.decoded > CASES // 10 and report.merged_points > 0
    assert {"not_avro", "truncated", "invalid_value", "unknown_schema", "missing_field"} <= set(report.rejected)
    assert set(report.by_depth) == set(DEPTHS)


def test_a_failing_case_is_reproduced_from_its_seed(ztf_seeds, lsst_seeds):
    fuzzer = Fuzzer([ztf_seeds, lsst_seeds])
    assert [fuzzer.case(s).payload for s in range(40)] == [fuzzer.case(s).payload for s in range(40)]

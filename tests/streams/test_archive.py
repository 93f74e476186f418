"""iter_archive over folders, files and ZTF-style tarballs; bad files become error items."""

from __future__ import annotations

import io
import tarfile

import pytest

from broker_filter.streams.archive import iter_archive
from broker_filter.streams.codec import AlertDecoder


def _single_alert_files(sample_files):
    return [p for p in sample_files if p.name.startswith(("2019_01_10", "472263571115115000", "datatest_ZTF"))]


def test_folder_in_time_order_with_payloads(sample_files):
    items = list(iter_archive([sample_files[0].parents[1]]))
    assert len(items) == 1 + 1 + 1 + 3 + 3 + 12 + 3
    assert all(item.error is None for item in items)
    times = [item.alert.time for item in items]
    assert times == sorted(times)
    decoder = AlertDecoder()
    for item in items:  # each payload is ONE alert, as it would travel on Kafka
        assert decoder.decode(item.payload) == item.alert


def test_tar_gz_nightly_archive(sample_files, tmp_path):
    archive = tmp_path / "ztf_public_20190110.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in _single_alert_files(sample_files):
            tar.add(path, arcname=path.name)
        junk = b"not an alert"
        info = tarfile.TarInfo("broken.avro")
        info.size = len(junk)
        tar.addfile(info, io.BytesIO(junk))
    items = list(iter_archive([archive], order="file"))
    assert len(items) == 4
    good = [i for i in items if i.alert is not None]
    assert len(good) == 3 and all(i.origin.startswith(f"{archive}:") for i in good)
    (bad,) = [i for i in items if i.error is not None]
    assert bad.error.reason == "not_avro" and bad.payload == b"not an alert"


def test_damaged_file_yields_errors_and_goes_on(sample_files, tmp_path):
    data = next(p for p in sample_files if p.name.startswith("datatest_avro_multi")).read_bytes()
    (tmp_path / "a_truncated.avro").write_bytes(data[: len(data) - 5000])
    (tmp_path / "b_garbage.avro").write_bytes(b"\x00" * 100)
    (tmp_path / "c_good.avro").write_bytes(_single_alert_files(sample_files)[0].read_bytes())
    (tmp_path / "README.md").write_text("ignored")
    items = list(iter_archive([tmp_path], order="file"))
    by_file = {}
    for item in items:
        by_file.setdefault(item.origin.rsplit("/", 1)[-1], []).append(item)
    assert set(by_file) == {"a_truncated.avro", "b_garbage.avro", "c_good.avro"}
    assert by_file["a_truncated.avro"][-1].error.reason == "truncated"
    assert by_file["b_garbage.avro"][0].error.reason == "not_avro"
    assert [i.error for i in by_file["c_good.avro"]] == [None]


def test_missing_path_raises_before_yielding(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        iter_archive([tmp_path / "nope"]).__next__()


def test_pacing_follows_observation_time(sample_files):
    import time

    path = next(p for p in sample_files if p.name.startswith("datatest_avro_multi"))
    items = list(iter_archive([path]))
    span_s = (items[-1].alert.time - items[0].alert.time) * 86400
    started = time.monotonic()
    assert len(list(iter_archive([path], pace=span_s / 0.5))) == len(items)
    assert 0.4 < time.monotonic() - started < 3.0


def test_a_tar_member_larger_than_any_message_is_refused_unread_and_the_rest_decodes(sample_files, tmp_path):
    import tarfile

    from broker_filter.streams.archive import iter_archive
    from broker_filter.streams.codec import MAX_PAYLOAD_BYTES

    good = next(p for p in sample_files if p.name.startswith("2019_01_10"))
    huge = tmp_path / "huge.avro"
    with huge.open("wb") as handle:  # sparse: the declared size, no data written
        handle.truncate(MAX_PAYLOAD_BYTES + 1)
    archive = tmp_path / "night.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(huge, arcname="huge.avro")
        tar.add(good, arcname="good.avro")
    items = list(iter_archive([archive], order="file"))
    assert [i.error.reason if i.error else "ok" for i in items] == ["too_large", "ok"]

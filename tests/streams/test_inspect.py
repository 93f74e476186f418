"""broker-filter inspect: JSON lines on stdout, one error line per bad alert, exit status."""

from __future__ import annotations

import json



def test_inspect_samples(sample_files, capsys, run_command):
    assert run_command("inspect", [str(sample_files[0].parents[1])]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 24
    assert {line["survey"] for line in lines} == {"ztf", "lsst"}
    first = lines[0]
    assert set(first) == {"object_id", "alert_id", "survey", "n_detections", "bands", "first_mjd", "last_mjd"}
    assert first["first_mjd"] <= first["last_mjd"]


def test_inspect_bad_file_goes_on(sample_files, tmp_path, capsys, run_command):
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"Obj\x01garbage")
    assert run_command("inspect", [str(bad), str(sample_files[-1])]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) >= 1
    assert f"{bad} #0:" in captured.err
    assert run_command("inspect", [str(tmp_path / "missing.avro")]) == 2

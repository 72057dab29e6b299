"""The converter's worker processes: results in order over plain pipes, a worker's error or
death raised in the main process, no worker left behind when the writer stops early."""

import multiprocessing
import os

import pytest

from agetf.data import conversion, conversion_workers, convert_config, manifest, record_encoder


def _candidates(faces_dir, copies=1):
    candidates, _ = conversion.collect_candidates(conversion.list_files([faces_dir]),
                                                  (1.0, 0.0, 0.0))
    return candidates * copies


def test_results_come_back_in_order_from_every_worker(faces_dir):
    candidates = _candidates(faces_dir, copies=3)
    entries = record_encoder.label_entries([c.age_key for c in candidates], 5.0)
    paired = list(conversion_workers.encode_each(iter(candidates), entries, workers=3))
    assert [c.path for c, _ in paired] == [c.path for c in candidates]
    alone = [conversion_workers.encode_face(c, entries) for c in candidates]
    assert [result for _, result in paired] == alone
    assert not multiprocessing.active_children()


def test_a_workers_error_is_raised_here_with_its_traceback(faces_dir):
    candidates = _candidates(faces_dir)
    entries = {}  # no age entry: every worker's encode fails with a KeyError
    with pytest.raises(RuntimeError, match="(?s)a converter worker failed:.*KeyError"):
        list(conversion_workers.encode_all(candidates, entries, workers=2))
    assert not multiprocessing.active_children()


def test_stopping_early_leaves_no_worker_behind(faces_dir):
    candidates = _candidates(faces_dir, copies=6)
    entries = record_encoder.label_entries([c.age_key for c in candidates], 5.0)
    results = conversion_workers.encode_each(candidates, entries, workers=2)
    next(results)
    assert multiprocessing.active_children()
    results.close()  # the writer failed: workers still busy are stopped
    assert not multiprocessing.active_children()


def test_workers_start_during_the_serial_pass_and_stop_when_it_fails(faces_dir, tmp_path,
                                                                      monkeypatch):
    """They start once the manifest's header passed, so their start-up runs beside the pass
    over its rows; a row refused there (a path leaving the input folder) stops them."""
    names = sorted(os.listdir(faces_dir))[:3]
    labels = tmp_path / "m.csv"
    labels.write_text("file,age\n" + "".join(f"{name},30\n" for name in names)
                      + "../outside.jpg,40\n")
    alive_during_pass = []
    real_collect = manifest.collect_candidates

    def collect_noting_workers(*args, **kwargs):
        alive_during_pass.append(len(multiprocessing.active_children()))
        return real_collect(*args, **kwargs)

    monkeypatch.setattr(manifest, "collect_candidates", collect_noting_workers)
    config = convert_config.ConvertConfig(input_dirs=[faces_dir], labels=str(labels),
                                          output_dir=str(tmp_path / "out"), workers=2,
                                          show_progress=False)
    with pytest.raises(convert_config.ConversionError, match="line 5: .* leaves the input"):
        conversion.convert(config)
    assert alive_during_pass == [2]
    assert not multiprocessing.active_children()

"""The converter's worker processes: results in order over plain pipes, a worker's error or
death raised in the main process, no worker left behind when the writer stops early."""

import multiprocessing

import pytest

from agetf.data import conversion, conversion_workers, record_encoder


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

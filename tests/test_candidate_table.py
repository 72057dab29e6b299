"""The manifest's compact candidate table yields what a plain list of Candidates would: the
same candidates in the same writing order, the same skipped rows, the same shard plan."""

import os

import pytest

from agetf.data import (
    candidate_table,
    conversion,
    conversion_workers,
    dataset_files,
    manifest,
    split_files,
)

RATIOS = (0.8, 0.1, 0.1)


def _rows(root):
    """Rows with repeats (the first wins), missing files, bad labels, a link, ranges and
    unknowns; the files they name are made under root."""
    os.makedirs(root / "a" / "b")
    for i in range(40):
        (root / "a" / f"f{i:02d}.jpg").write_bytes(b"x" * (100 + i))
    os.symlink("f00.jpg", root / "a" / "link.jpg")
    cells = [("a/f{:02d}.jpg", "34", "f"), ("a/f{:02d}.jpg", "30-39", ""),
             ("a/f{:02d}.jpg", "", "m"), ("a/b/../f{:02d}.jpg", "70+", "1"),
             ("a/f{:02d}.jpg", "x", "m")]
    rows = []
    for i in range(60):
        path, age, gender = cells[i % len(cells)]
        rows.append(manifest.Row(i + 2, "/labels/labels.csv", path.format(i % 45), age, gender,
                                 split="test" if i % 11 == 0 else None))
    rows += [manifest.Row(70, "/labels/labels.csv", "a/link.jpg", "5", "m"),
             manifest.Row(71, "/labels/labels.csv", "a/missing.jpg", "5", "m"),
             manifest.Row(72, "/labels/labels.csv", "a/missing.jpg", "6", "m"),
             manifest.Row(73, "/labels/labels.csv", "", "6", "m")]
    return rows


def _expected(rows, root):
    """The list the converter held before the table: first row of a path wins, missing files
    skipped, then sorted by the "order" hash."""
    candidates, skipped, seen = [], [], set()
    for row in rows:
        where = ("labels.csv", row.line)
        if not row.file:
            skipped.append(("", manifest.REASON_NO_PATH, *where))
            continue
        relative = os.path.normpath(row.file)
        path = os.path.join(str(root), relative)
        try:
            labels, split = manifest.row_labels(row)
        except manifest.BadRow as error:
            skipped.append((path, str(error), *where))
            continue
        if relative in seen:
            skipped.append((path, manifest.REASON_DUPLICATE, *where))
            continue
        seen.add(relative)
        if not os.path.exists(path):
            skipped.append((path, manifest.REASON_NO_FILE, *where))
            continue
        split = split or split_files.assign_split(relative, RATIOS)
        candidates.append(conversion_workers.Candidate(path, relative, labels, split,
                                                       where=where, size=os.stat(path).st_size))
    return conversion.order_for_writing(candidates), skipped


def _as_tuples(candidates):
    return [(c.path, c.file_name, c.labels, c.split, c.where) for c in candidates]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_table_yields_the_lists_candidates_order_and_skipped_rows(tmp_path, monkeypatch,
                                                                     workers):
    # With workers, the files are checked in chunks (7 rows here) by the worker processes
    # while the rows are read on: the table must come out the same.
    monkeypatch.setattr(manifest, "PROBE_CHUNK", 7)
    rows = _rows(tmp_path)
    expected, expected_skipped = _expected(rows, tmp_path)
    with conversion_workers.Encoders(workers) as helpers:
        table, skipped = manifest.collect_candidates(rows, str(tmp_path), RATIOS, helpers)
    with table:
        assert _as_tuples(table) == _as_tuples(expected)
        assert len(table) == len(expected) == 33
        assert sorted(skipped) == sorted(expected_skipped)
        plain = candidate_table.CandidateList(expected)
        assert (table.counts, table.sizes) == (plain.counts, plain.sizes)
        assert set(table.age_keys()) >= set(plain.age_keys())
    reasons = {item[1] for item in skipped}
    assert {manifest.REASON_DUPLICATE, manifest.REASON_NO_FILE, manifest.REASON_AGE} <= reasons


def test_paths_whose_order_hashes_tie_are_told_apart_by_name(tmp_path, monkeypatch):
    # Every hash equal: the writing order is the manifest's, and only true repeats are dropped.
    monkeypatch.setattr(split_files, "name_hash", lambda name, salt: 0.5)
    rows = _rows(tmp_path)
    table, skipped = manifest.collect_candidates(rows, str(tmp_path), RATIOS)
    with table:
        expected, expected_skipped = _expected(rows, tmp_path)
        assert _as_tuples(table) == _as_tuples(expected)
        assert sorted(skipped) == sorted(expected_skipped)


def test_an_empty_table_yields_nothing(tmp_path):
    rows = [manifest.Row(2, "labels.csv", "missing.jpg", "5", "m")]
    table, skipped = manifest.collect_candidates(rows, str(tmp_path), RATIOS)
    with table:
        assert list(table) == [] and len(table) == 0
        assert table.counts == dict.fromkeys(dataset_files.SPLITS, 0)
    assert [item[1] for item in skipped] == [manifest.REASON_NO_FILE]


def test_equal_label_cells_share_one_labels_object(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"x")
    rows = [manifest.Row(2, "l.csv", "a.jpg", "30-39", "f"),
            manifest.Row(3, "l.csv", "b.jpg", "30-39", "f")]
    table, _ = manifest.collect_candidates(rows, str(tmp_path), RATIOS)
    with table:
        first, second = list(table)
    assert first.labels is second.labels


def test_a_row_with_unhashable_cells_is_still_parsed(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    rows = [manifest.Row(2, "l.jsonl", "a.jpg", ["34"], "f")]
    table, skipped = manifest.collect_candidates(rows, str(tmp_path), RATIOS)
    with table:
        assert list(table) == []
    assert [item[1] for item in skipped] == [manifest.REASON_AGE]


@pytest.mark.parametrize("workers", [1, 2])
def test_encode_each_pairs_each_result_with_its_candidate(faces_dir, workers):
    from agetf.data import record_encoder

    candidates, _ = conversion.collect_candidates(conversion.list_files([faces_dir]), RATIOS)
    entries = record_encoder.label_entries([c.age_key for c in candidates], 5.0)
    paired = list(conversion_workers.encode_each(iter(candidates), entries, workers))
    assert [c.path for c, _ in paired] == [c.path for c in candidates]
    assert [result for _, result in paired] == list(
        conversion_workers.encode_all(candidates, entries, 1))

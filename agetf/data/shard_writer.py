"""A converted dataset's shards and the TFDS metadata that describes them.

count_shards sizes each split before any image is decoded; frame_record turns a serialized
record into the bytes a TFRecord file holds for it, in the converter's workers; a SplitWriter
writes one split's framed records into its shards as they arrive, under temporary names, and
gives the complete shards their TFDS names (agetf.data.dataset_files.shard_name) when the split
is done. No TensorFlow here but in write_metadata: the workers import this module.
"""

import math
import os
import struct

import google_crc32c

from agetf.data.dataset_files import SPLITS, shard_name

_CRC_MASK_DELTA = 0xA282EAD8  # TFRecord's masked CRC-32C (tensorflow/core/lib/hash/crc32c.h)
_WRITE_BUFFER = 1 << 20  # bytes; a framed face is about 10 KiB, one write call per ~100 faces


def _mask(crc):
    return ((crc >> 15 | crc << 17) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame_record(*pieces):
    """A serialized record, given whole or as pieces to concatenate, as a TFRecord file
    stores it: its length (uint64), the length's masked CRC-32C, the record, and the record's
    masked CRC-32C, all little-endian.

    What tf.io.TFRecordWriter writes for it, byte for byte (tests/test_convert.py), computed
    where the record is made, so that the process writing the shards only appends bytes.
    """
    length = struct.pack("<Q", sum(map(len, pieces)))
    crc = 0
    for piece in pieces:
        crc = google_crc32c.extend(crc, piece)
    return b"".join((length, struct.pack("<I", _mask(google_crc32c.value(length))), *pieces,
                     struct.pack("<I", _mask(crc))))


def count_shards(num_records, num_bytes, config):
    """Shards for one split: about shard_bytes each, at least min_shards, never more than records.

    Args:
      num_records: the split's files.
      num_bytes: their size on disk.
      config: a ConvertConfig (num_shards, min_shards, shard_bytes).
    """
    if num_records == 0:
        return 0
    wanted = config.num_shards or max(config.min_shards, math.ceil(num_bytes / config.shard_bytes))
    return min(wanted, num_records)


class SplitWriter:
    """Writes one split's framed records (frame_record), as they arrive, into num_shards
    temporary files.

    Its candidates arrive in a pseudo-random order (conversion.order_for_writing), so
    consecutive blocks are as mixed as any: candidate j of n goes to shard j * num_shards // n,
    and one file is open at a time. A skipped image leaves its shard one record shorter.
    """

    def __init__(self, folder, split, num_candidates, num_shards):
        self.folder, self.split = folder, split
        self.num_candidates, self.num_shards = num_candidates, num_shards
        self.seen, self.lengths, self.paths, self._writer = 0, [], [], None

    def add(self, framed):
        """Takes the next candidate's framed record, or None when that candidate was skipped."""
        shard = self.seen * self.num_shards // self.num_candidates
        self.seen += 1
        while len(self.paths) <= shard:
            self._open_next()
        if framed is not None:
            self._writer.write(framed)
            self.lengths[shard] += 1

    def _open_next(self):
        self.close()
        self.paths.append(os.path.join(self.folder, f"{self.split}-{len(self.paths):05d}"))
        self.lengths.append(0)
        self._writer = open(self.paths[-1], "wb", buffering=_WRITE_BUFFER)

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def publish(self, output_dir, dataset_name):
        """Renames the non-empty shards to their final names in output_dir; returns
        ([records in each], bytes of all)."""
        self.close()
        kept = [(path, length) for path, length in zip(self.paths, self.lengths) if length]
        num_bytes = 0
        for index, (path, _) in enumerate(kept):
            final = os.path.join(output_dir, shard_name(dataset_name, self.split, index, len(kept)))
            num_bytes += os.path.getsize(path)
            os.replace(path, final)
        for path, length in zip(self.paths, self.lengths):
            if not length:
                os.remove(path)  # every image in it was skipped: no empty shard is published
        return [length for _, length in kept], num_bytes


def write_metadata(folder, shard_lengths, split_bytes):
    """dataset_info.json + features.json, so tfds.builder_from_directory loads the folder."""
    # Function-level: TFDS and TensorFlow take seconds; the drivers' one-line errors come first.
    import tensorflow_datasets as tfds

    from agetf.data import schema

    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths[split],
                            num_bytes=split_bytes[split])
        for split in SPLITS if shard_lengths[split]
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=folder, features=schema.tfds_features(), split_infos=split_infos,
        filename_template=None, check_data=False,
        description="Face crops with age, gender and race labels, converted by agetf.")

"""The tf.data input pipeline: converted TFRecord shards -> batches of (images, labels).

Training: shard files per input pipeline -> shuffle files every epoch -> repeat ->
parallel interleave -> shuffle records -> batch -> parse the batch + decode each image to
a fixed uint8 canvas (DCT-domain downscaling where img_dim allows) -> labels ->
prefetch; with `cache`, decoded canvases are kept in memory and shuffled from there.
The CPU does only what cannot move: reading and JPEG decoding. The train step crops,
flips, resizes and colours the batch on the accelerator (`augment.augment_batch`).
Evaluation: every record exactly once, in a deterministic order, decoded and resized
with `image_ops.decode_and_resize` (what the exported model uses) to float32 0..255.
The model holds the backbone's own preprocessing.
"""

import functools
import hashlib
import json
import os

import tensorflow as tf
from absl import logging

from agetf import UsageError
from agetf.data import augment, dataset_files, image_ops, labels, schema

__all__ = ["build_dataset", "num_examples", "list_shards"]

# Deterministic interleave order for evaluation: this many files are read at once.
_EVAL_CYCLE_LENGTH = 4


class CorruptDataError(UsageError):
    """A shard file cannot be read; the message names it and the fix."""


def read_shard(path):
    """(records the TFRecord reader yields from `path`, the first line of the error it stopped
    at, or None when the file reads to its end). No decoding: about the cost of reading it."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        return count, error.message.splitlines()[0]
    return count, None


def find_corrupt_shards(files):
    """The files among `files` whose TFRecord framing or checksums are broken, each with
    its error."""
    bad = []
    for path in files:
        _, error = read_shard(path)
        if error is not None:
            bad.append((path, error))
    return bad


def corrupt_data_error(*data_dirs):
    """A CorruptDataError naming every broken shard of the `data_dirs` (after a DataLossError)."""
    files = [f for data_dir in data_dirs for split in dataset_files.SPLITS
             for f in _shards_or_none(data_dir, split)]
    bad = find_corrupt_shards(files)
    named = ("; ".join(f"{path} ({reason})" for path, reason in bad)
             or f"a shard in {' or '.join(data_dirs)}")
    return CorruptDataError(f"corrupt or truncated TFRecord data: {named}; reconvert the dataset "
                            "or pass --skip_corrupt_records to skip unreadable records")


def _shards_or_none(data_dir, split):
    try:
        return list_shards(data_dir, split)
    except ValueError:
        return []


def distribute_through_service(dataset, address, job_name, processing_mode="parallel_epochs"):
    """Moves `dataset`'s processing to the tf.data service at `address` (grpc://HOST:PORT).

    Consumers that share `job_name` (the workers of one run) share the job's output, so
    each element reaches one consumer.
    """
    if not address.startswith("grpc://"):
        raise UsageError(f"--tf_data_service={address} must look like grpc://HOST:PORT")
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=processing_mode, service=address, job_name=job_name))


def _service_job_name(config):
    def where(path):
        return path if is_remote(path) else os.path.abspath(path)

    data_dir = (",".join(f"{where(source.path)}:{source.weight:g}" for source in config.sources)
                if config.mixed else where(config.data_dir))
    key = f"{data_dir}|{config.img_dim}|{config.seed}|{config.cache}"
    return "agetf-train-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def list_shards(data_dir, split):
    """Sorted shard files of a split; ValueError naming the problem if there are none."""
    if split not in dataset_files.SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(dataset_files.SPLITS)}")
    # tf.io.gfile, so that a data_dir on any filesystem TensorFlow reads (gs://...) works.
    try:
        exists = tf.io.gfile.isdir(data_dir)
        # The converter writes shards under a temporary name first; only complete ones match.
        files = sorted(f for f in tf.io.gfile.glob(dataset_files.shard_pattern(data_dir, split))
                       if dataset_files.SHARD_FILE.search(f)) if exists else []
    except tf.errors.OpError as error:  # e.g. a scheme this TensorFlow has no filesystem for
        raise UsageError(f"data directory {data_dir} cannot be read "
                         f"({error.message.splitlines()[0]}); give a local folder or a "
                         "filesystem TensorFlow supports here (gs://...)") from None
    if not exists:
        unknown = (" (or TensorFlow has no filesystem for its scheme here)"
                   if is_remote(data_dir) else "")
        raise UsageError(f"data directory {data_dir} does not exist{unknown}; convert a dataset "
                         "into it with scripts/make_tfrecords")
    if not files:
        raise UsageError(f"no {split} shards (*-{split}.tfrecord-NNNNN-of-NNNNN) in {data_dir}; "
                         "convert a dataset into it with scripts/make_tfrecords")
    return files


def num_examples(data_dir, split):
    """Number of records in a split, from the conversion report (else by counting)."""
    files = list_shards(data_dir, split)
    count = _count_from_report(data_dir, split)
    if count is not None:
        return count
    return sum(1 for _ in tf.data.TFRecordDataset(files))


def read_report(data_dir):
    """The converter's report (conversion_report.json) as a dict; {} when missing or unreadable."""
    try:
        with tf.io.gfile.GFile(os.path.join(data_dir, dataset_files.REPORT_FILE)) as f:
            report = json.load(f)
    except (OSError, ValueError, tf.errors.OpError):
        return {}
    return report if isinstance(report, dict) else {}


def _count_from_report(data_dir, split):
    value = read_report(data_dir).get("counts", {}).get(split)
    return value if isinstance(value, int) else None


def build_dataset(config, split, batch_size, *, training, input_context=None,
                  include_metadata=False):
    """Batches of (images, labels dict) for one split; `batch_size` is per replica.

    Training repeats forever and yields uint8 [B, H, W, 3] images at `training_canvas`
    size, for `augment.augment_batch` in the train step; several datasets (config.sources)
    are mixed face by face in proportion to their weights. Evaluation yields float32
    [B, d, d, 3] in 0..255, every record of this input pipeline's part of the split (of
    every dataset) once.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    files_by_source = [list_shards(source.path, split) for source in config.sources]
    service = training and config.data_service
    if service:
        # The service's workers share one job: sharding files here would give every
        # consumer a different dataset, which a shared job cannot serve.
        input_context = None
    if training:
        dataset = _training_dataset(config, files_by_source, batch_size, input_context, split)
    else:
        files = [path for files in files_by_source for path in files]
        dataset = _evaluation_dataset(config, files, batch_size, input_context)
    finish = functools.partial(_finish_batch, config=config, include_metadata=include_metadata)
    dataset = dataset.map(_plain(finish), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=not training)
    if service:
        dataset = distribute_through_service(dataset, config.data_service,
                                             _service_job_name(config))
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_options(config, training))


def _plain(fn):
    # These functions have no Python control flow on tensors, so AutoGraph has nothing
    # to convert; skipping it also avoids its warnings about closures.
    return tf.autograph.experimental.do_not_convert(fn)


def _options(config, training):
    options = tf.data.Options()
    options.deterministic = not training
    options.autotune.enabled = True
    if config.threads:
        options.threading.private_threadpool_size = config.threads
    return options


def _pipeline_shard(input_context, num_files):
    """(num_pipelines, pipeline_id, by_file) for this input pipeline."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return 1, 0, True
    pipelines = input_context.num_input_pipelines
    if num_files < pipelines:
        logging.warning(
            "Only %d shard files for %d input pipelines: sharding by record instead, so every "
            "pipeline reads every file; convert with more shards (min_shards) to avoid this.",
            num_files, pipelines)
        return pipelines, input_context.input_pipeline_id, False
    return pipelines, input_context.input_pipeline_id, True


def file_dataset(files, *, training, input_context=None, seed=None):
    """The shard files this input pipeline reads, reshuffled each epoch when training.

    Returns (dataset of file names, record_shard): record_shard is (num, index) when
    records, not files, must be sharded, else None. Files are sharded before they are
    shuffled, so pipelines with different random seeds still split them disjointly.
    """
    pipelines, pipeline_id, by_file = _pipeline_shard(input_context, len(files))
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if not by_file:
        return dataset, (pipelines, pipeline_id)
    if pipelines > 1:
        dataset = dataset.shard(pipelines, pipeline_id)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return dataset, None


def _read_records(config, files, input_context, *, training, repeat):
    files_ds, record_shard = file_dataset(files, training=training, input_context=input_context,
                                          seed=config.seed)
    if record_shard is not None:
        # Record sharding needs the same record order in every pipeline: read in order.
        records = tf.data.TFRecordDataset(files_ds, num_parallel_reads=None)
        records = records.shard(*record_shard)
        return records.repeat() if repeat else records
    if repeat:
        files_ds = files_ds.repeat()
    # Local files read in the interleave's own thread at 1.6x the records/s of parallel
    # reader threads on 2 cores (where reading competes with decoding for the CPU); remote
    # object stores need the parallel readers to hide their latency.
    cycle_length = None if training else _EVAL_CYCLE_LENGTH
    if not is_remote(files[0]):
        return files_ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length)
    return files_ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)


def is_remote(path):
    """Whether a path is on a remote filesystem (gs://, s3://, hdfs://, ...)."""
    return "://" in os.fspath(path)


def _ignore_errors(dataset, config):
    if not config.skip_corrupt_records:
        return dataset
    # Each skipped record is logged by tf.data with the error that made it unreadable.
    return dataset.ignore_errors(log_warning=True)


def _parse(serialized):
    features = schema.parse_examples(serialized)
    return features.pop("image"), features


def training_canvas(config, split="train"):
    """The size training images are decoded to (see image_ops.plan_canvas), from the reports:
    one canvas for all of config's datasets, so that their faces batch together."""
    source_sizes, unsized = [], []
    for source in config.sources:
        sizes = read_report(source.path).get("image_sizes", {}).get(split, {})
        for key in sizes:
            height, _, width = key.partition("x")
            source_sizes.append((int(height), int(width)))
        if not sizes:
            unsized.append(source.path)
    canvas = image_ops.plan_canvas(source_sizes, config.img_dim,
                                   augment.min_crop_side(config.augment))
    for path in unsized:
        logging.warning("%s has no image sizes in %s (converted by an older agetf): every "
                        "training image is decoded and resized to %dx%d, slower than decoding "
                        "straight to size; reconvert with scripts/make_tfrecords to avoid this.",
                        path, dataset_files.REPORT_FILE, canvas.height, canvas.width)
    return canvas


def _mix(datasets, config):
    """One stream of faces from each dataset's stream, drawn in proportion to the weights."""
    if len(datasets) == 1:
        return datasets[0]
    total = sum(source.weight for source in config.sources)
    weights = [source.weight / total for source in config.sources]
    # Every stream repeats forever, so none runs empty and the proportions hold throughout.
    return tf.data.Dataset.sample_from_datasets(datasets, weights=weights, seed=config.seed,
                                                stop_on_empty_dataset=True)


def _training_dataset(config, files_by_source, batch_size, input_context, split):
    """Batches of uint8 images at the canvas size: the train step crops, resizes, augments."""
    canvas = training_canvas(config, split)

    def decode(serialized):
        jpeg, features = _parse(serialized)
        return image_ops.decode_to_canvas(jpeg, canvas), features

    def shuffle(dataset):
        return dataset.shuffle(config.shuffle_buffer, seed=config.seed,
                               reshuffle_each_iteration=True)

    if config.cache:
        # Decoded once, kept in memory as uint8; shuffled anew every epoch from there.
        streams = []
        for files in files_by_source:
            records = _read_records(config, files, input_context, training=True, repeat=False)
            dataset = _ignore_errors(_map(records, decode, training=True), config)
            streams.append(shuffle(dataset.cache().repeat()))
        return _mix(streams, config).batch(batch_size, drop_remainder=True)

    def decode_batch(serialized):
        # Parsing a whole batch at once, and one map call per batch rather than per image,
        # measured 1.2x the images/s of per-record parse-and-decode on 2 cores.
        features = schema.parse_examples(serialized)
        images = tf.map_fn(lambda jpeg: image_ops.decode_to_canvas(jpeg, canvas),
                           features.pop("image"), parallel_iterations=4,
                           fn_output_signature=tf.TensorSpec([canvas.height, canvas.width, 3],
                                                             tf.uint8))
        return images, features

    streams = [shuffle(_ignore_errors(
        _read_records(config, files, input_context, training=True, repeat=True), config))
        for files in files_by_source]
    records = _mix(streams, config).batch(batch_size, drop_remainder=True)
    # Unreadable records are dropped before batching; a record that reads but fails to
    # decode (the converter checked every image, so only a foreign writer makes one) drops
    # its batch.
    return _ignore_errors(_map(records, decode_batch, training=True), config)


def _map(dataset, fn, *, training):
    return dataset.map(_plain(fn), num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)


def _evaluation_dataset(config, files, batch_size, input_context):
    records = _read_records(config, files, input_context, training=False, repeat=False)

    def decode(serialized):
        jpeg, features = _parse(serialized)
        return image_ops.decode_and_resize(jpeg, config.img_dim), features

    dataset = _map(records, decode, training=False)
    return _ignore_errors(dataset, config).batch(batch_size, drop_remainder=False)


def _finish_batch(images, features, *, config, include_metadata):
    """Turns parsed features into the label dict the model and losses expect: age (a range's
    middle), age_min and age_max (equal for an exact age) in years, -1 where unknown, as
    are age_range and gender; weight, the face's sample weight."""
    age = tf.cast(features["age"], tf.float32)
    if config.age_deviation is None:
        histogram = features["age_histogram"]
    else:  # all zeros for an unknown age, as the records hold it
        histogram = labels.range_histogram_tf(features["age_min"], features["age_max"],
                                              config.age_deviation)
    targets = {
        "age": age,
        "age_min": tf.cast(features["age_min"], tf.float32),
        "age_max": tf.cast(features["age_max"], tf.float32),
        "age_histogram": histogram,
        "age_range": tf.cast(features["age_range"], tf.int32),
        "gender": tf.cast(features["gender"], tf.float32),
        "race": tf.cast(features["race"], tf.int32),
        "weight": tf.cast(features["weight"], tf.float32),
    }
    if include_metadata:
        targets["filename"] = features["filename"]
    return images, targets

"""PNG plots of a run (training curves, LR range test) and a caption grid of faces.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no
global backend switch) and written atomically: a reader never sees a half-written
PNG, and a crash leaves the previous plot in place.
"""

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from agetf.common import files

_DPI = 100
# Each panel of the training plot, in inches, and the room around its axes for tick labels,
# axis labels and the title (left, right, top, bottom).
_PANEL_SIZE = (5.0, 3.6)
_PANEL_MARGINS = (0.95, 0.2, 0.35, 0.55)
_MAX_COLUMNS = 3
_LR_KEYS = ("lr", "learning_rate")
_X_AXIS_KEYS = ("epoch",)  # the x axis itself, not a metric
# Loss each head trains with, for subplot titles.
_HEAD_LOSSES = {
    "age_histogram": "EMD",
    "age_range": "cross-entropy",
    "gender": "binary cross-entropy",
}
# Accuracy-like families live in [0, 1]; a fixed axis makes epochs comparable.
_SHARE_SUFFIXES = ("accuracy", "cs5")


def _new_figure(width_in, height_in):
    figure = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path):
    """Writes `figure` as PNG to `path` atomically (agetf.common.files.atomic_path)."""
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=_DPI)


def _as_series(values):
    """A 1-D float array of a history entry (None becomes NaN), or None if it is not one."""
    try:
        series = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if series.ndim != 1 or series.size == 0 or not np.isfinite(series).any():
        return None
    return series


def metric_families(history):
    """Groups history keys into [(family, train series or None, val series or None)].

    The total loss comes first, the learning rate last, the rest in key order.
    """
    families = {}
    for key, values in history.items():
        series = None if key in _X_AXIS_KEYS else _as_series(values)
        if series is None:
            continue
        is_val = key.startswith("val_")
        family = key[len("val_"):] if is_val else key
        families.setdefault(family, [None, None])[1 if is_val else 0] = series

    def order(family):
        return 0 if family == "loss" else 2 if family in _LR_KEYS else 1

    names = sorted(families, key=order)  # sorted() is stable: key order within a rank
    return [(name, *families[name]) for name in names]


def _humanize(name):
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def describe_family(family):
    """(title, y-axis label) of a metric family, in human units."""
    if family == "loss":
        return "Total loss", "loss"
    if family in _LR_KEYS:
        return "Learning rate", "learning rate"
    if family.endswith("_loss"):
        head = family[:-len("_loss")]
        kind = _HEAD_LOSSES.get(head)
        return f"{_humanize(head)} loss" + (f" ({kind})" if kind else ""), "loss"
    if family == "mae" or family.endswith("_mae"):
        prefix = _humanize(family[:-len("mae")].rstrip("_"))
        return (f"{prefix} age MAE" if prefix else "Age MAE"), "MAE (years)"
    if family == "cs5" or family.endswith("_cs5"):
        return "CS@5: share within 5 years", "share of faces"
    if family.endswith("accuracy"):
        return _humanize(family), "accuracy"
    return _humanize(family), _humanize(family).lower()


def _plot_family(axes, family, train, val):
    title, ylabel = describe_family(family)
    for series, label, style, color in ((train, "train", "-", "tab:blue"),
                                        (val, "validation", "--", "tab:orange")):
        if series is not None:
            epochs = np.arange(1, series.size + 1)
            axes.plot(epochs, series, style, color=color, marker="o", markersize=3, label=label)
    values = np.concatenate([s for s in (train, val) if s is not None])
    finite = values[np.isfinite(values)]
    if family in _LR_KEYS and (finite > 0).all():
        axes.set_yscale("log")
    elif family.endswith(_SHARE_SUFFIXES) and ((finite >= 0) & (finite <= 1)).all():
        axes.set_ylim(0.0, 1.02)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    # Half an epoch either side, so a single epoch still gets an integer tick.
    epochs = max(s.size for s in (train, val) if s is not None)
    axes.set_xlim(0.5, epochs + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.grid(True, alpha=0.3)
    if family not in _LR_KEYS:  # the learning rate has no validation twin to tell apart
        axes.legend(fontsize=8)


def plot_training(history, path):
    """Writes a PNG of every metric family in `history` (train and val per subplot) vs epoch."""
    families = metric_families(history)
    if not families:
        figure = _new_figure(5, 3.6)
        figure.text(0.5, 0.5, "no metrics recorded yet", ha="center", va="center")
        _save_figure(figure, path)
        return
    columns = min(_MAX_COLUMNS, len(families))
    rows = math.ceil(len(families) / columns)
    width, height = _PANEL_SIZE
    figure = _new_figure(width * columns, height * rows)
    # Fixed margins in inches around each panel: a tight_layout here took most of the time
    # of a plot, and the monitor draws one after every epoch.
    (left, right, top, bottom) = _PANEL_MARGINS
    axes_width, axes_height = width - left - right, height - top - bottom
    grid = figure.subplots(rows, columns, squeeze=False, gridspec_kw=dict(
        left=left / (width * columns), right=1 - right / (width * columns),
        bottom=bottom / (height * rows), top=1 - top / (height * rows),
        wspace=(left + right) / axes_width, hspace=(top + bottom) / axes_height))
    for axes, (family, train, val) in zip(grid.flat, families):
        _plot_family(axes, family, train, val)
    for axes in list(grid.flat)[len(families):]:
        axes.set_visible(False)
    _save_figure(figure, path)


def plot_lr_find(lrs, losses, smoothed, suggestion, path):
    """Writes a PNG of loss vs learning rate (log axis), the suggested LR marked."""
    figure = _new_figure(7, 4.5)
    axes = figure.subplots()
    lrs = np.asarray(lrs, dtype=np.float64)
    if lrs.size == 0:
        axes.text(0.5, 0.5, "no steps recorded", ha="center", va="center",
                  transform=axes.transAxes)
    else:
        smoothed = np.asarray(smoothed, dtype=np.float64)
        axes.plot(lrs, np.asarray(losses, dtype=np.float64), color="tab:blue", alpha=0.3,
                  linewidth=1, label="loss")
        axes.plot(lrs, smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
        axes.set_xscale("log")
        _limit_loss_axis(axes, smoothed)
    if suggestion is not None:
        axes.axvline(suggestion, color="tab:red", linestyle="--",
                     label=f"suggested lr {suggestion:.2g}")
        axes.annotate(f"{suggestion:.2g}", xy=(suggestion, 1.0), xycoords=("data", "axes fraction"),
                      xytext=(4, -14), textcoords="offset points", color="tab:red")
    axes.set_title("Learning-rate range test")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)


def plot_reliability(rows, ece, path, title="Female probability: reliability"):
    """Writes a PNG reliability diagram: each bin's share of women against its mean
    female probability (rows of agetf.evaluation.interval_calibration's table), the
    diagonal a calibrated model follows, and each bin's face count."""
    figure = _new_figure(5.5, 5)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    if rows:
        centres = [(row["low"] + row["high"]) / 2 for row in rows]
        widths = [row["high"] - row["low"] for row in rows]
        axes.bar(centres, [row["female_share"] for row in rows], width=widths, alpha=0.35,
                 edgecolor="tab:blue", color="tab:blue", label="share of women in the bin")
        axes.plot([row["mean_probability"] for row in rows],
                  [row["female_share"] for row in rows], "o-", color="tab:red",
                  label="at the bin's mean probability")
        for centre, row in zip(centres, rows):
            axes.annotate(str(row["count"]), xy=(centre, row["female_share"]), xytext=(0, 4),
                          textcoords="offset points", ha="center", fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("predicted probability of female")
    axes.set_ylabel("share of women")
    axes.set_title(f"{title} (ECE {ece:.3f})", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    _save_figure(figure, path)


def _limit_loss_axis(axes, smoothed):
    """Fits the y axis to the smoothed curve, so raw spikes do not flatten it."""
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    margin = 0.1 * (high - low) or 0.1 * abs(high) or 0.1
    axes.set_ylim(low - margin, high + margin)


def face_grid(images, captions, columns=4):
    """Returns a uint8 HxWx3 picture of `images` in a grid, each captioned (for TensorBoard)."""
    images = _as_uint8_rgb(images)
    if len(captions) != len(images):
        raise ValueError(f"face_grid got {len(images)} images but {len(captions)} captions; "
                         "pass one caption per image")
    if columns < 1:
        raise ValueError(f"face_grid columns must be >= 1, got {columns}")
    count, height, width, _ = images.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    pad = 6
    cell_w = max(width, 128)  # small crops are enlarged so captions fit beneath them
    cell_h = round(cell_w * height / width)
    lines = max(str(c).count("\n") + 1 for c in captions)
    caption_h = 13 * lines + 6
    total_w = columns * (cell_w + pad) + pad
    total_h = rows * (cell_h + caption_h + pad) + pad
    figure = _new_figure(total_w / _DPI, total_h / _DPI)
    figure.patch.set_facecolor("white")
    for i, (image, caption) in enumerate(zip(images, captions)):
        row, column = divmod(i, columns)
        left = pad + column * (cell_w + pad)
        top = pad + row * (cell_h + caption_h + pad)
        axes = figure.add_axes([left / total_w, 1 - (top + cell_h) / total_h,
                                cell_w / total_w, cell_h / total_h])
        axes.imshow(image, interpolation="bilinear")
        axes.set_axis_off()
        figure.text((left + cell_w / 2) / total_w, 1 - (top + cell_h + 3) / total_h, str(caption),
                    ha="center", va="top", fontsize=8, linespacing=1.1)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def _as_uint8_rgb(images):
    """NHWC uint8 RGB from uint8 or float 0..255 images with 1 or 3 channels (or NHW)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"face_grid needs a batch of images shaped [N, H, W, 1 or 3] with N > 0, "
                         f"got shape {images.shape}")
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images.astype(np.float64)), 0, 255).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def plot_runs(histories, metrics, path):
    """Several runs' validation metrics against their cumulative training time, one panel per
    metric: runs of different speeds compared at equal time, as equal-time tuning needs.

    `histories` maps a run's label to its history (history.json's dict, which has
    `epoch_seconds`); a run lacking a metric is left out of that panel.
    """
    width, height = _PANEL_SIZE
    figure = _new_figure(width * len(metrics), height + 0.4)
    for column, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), column + 1)
        for label, history in histories.items():
            seconds, values = _as_series(history.get("epoch_seconds")), _as_series(
                history.get(metric))
            if seconds is None or values is None or len(seconds) != len(values):
                continue
            axes.plot(np.cumsum(seconds) / 60.0, values, marker="o", markersize=3, label=label)
        axes.set_xlabel("training time (min)")
        axes.set_title(_humanize(metric))
        axes.grid(True, alpha=0.3)
        if metric.endswith(_SHARE_SUFFIXES):
            axes.set_ylim(top=1.0)
        axes.legend(fontsize=7)
    figure.tight_layout()
    _save_figure(figure, path)

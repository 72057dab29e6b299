"""The learning-rate range test's bookkeeping: LR per step, smoothed loss, stop rule, suggestion.

The training loop runs the steps and restores the weights afterwards; this module
holds only the arithmetic, so it is testable without a model. (Leslie Smith's range
test as in the older project: exponential LR growth per batch, loss smoothed by a
bias-corrected moving average, stop once the smoothed loss exceeds 4x its best.)
"""

import math

import numpy as np

# Points ignored at the start of the curve when suggesting: the moving average is
# still settling there and its slope is noise.
MIN_SKIP_START = 3
# Fewer points than this and there is no curve to read a slope from.
MIN_POINTS_FOR_SUGGESTION = 10


class LRRangeTest:
    """One range test: feed `record(lr_at(i), loss)` after each step until it returns False."""

    def __init__(self, min_lr=1e-10, max_lr=10.0, num_steps=100, beta=0.98, stop_factor=4.0):
        if not 0 < min_lr < max_lr:
            raise ValueError(f"LR range test needs 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
        if num_steps < 2:
            raise ValueError(f"LR range test needs at least 2 steps, got {num_steps}; "
                             "use more batches or epochs")
        if not 0 <= beta < 1:
            raise ValueError(f"LR range test smoothing beta must be in [0, 1), got {beta}")
        if stop_factor <= 1:
            raise ValueError(f"LR range test stop_factor must be > 1, got {stop_factor}")
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.num_steps = int(num_steps)
        self.beta = float(beta)
        self.stop_factor = float(stop_factor)
        self.lrs, self.losses, self.smoothed = [], [], []
        self.best = math.inf
        self.stop_reason = None
        self._average = 0.0

    def lr_at(self, i):
        """LR for step i: min_lr at 0, max_lr at num_steps - 1, a constant ratio in between."""
        fraction = i / (self.num_steps - 1)
        return self.min_lr * (self.max_lr / self.min_lr) ** fraction

    def record(self, lr, loss):
        """Records one step's loss; returns False when the test should stop."""
        loss = float(loss)
        if not math.isfinite(loss):
            self.stop_reason = f"loss became {loss} at lr {lr:.3g}"
            return False
        self._average = self.beta * self._average + (1.0 - self.beta) * loss
        smoothed = self._average / (1.0 - self.beta ** (len(self.losses) + 1))
        self.lrs.append(float(lr))
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        if len(self.smoothed) > 1 and smoothed > self.stop_factor * self.best:
            self.stop_reason = (f"smoothed loss {smoothed:.4g} exceeded {self.stop_factor:g}x "
                                f"the best {self.best:.4g} at lr {lr:.3g}")
            return False
        self.best = min(self.best, smoothed)
        return True

    def suggestion(self):
        """LR where the loss falls fastest: the steepest drop of the smoothed loss vs log10(lr).

        Only points between the first few and the smoothed minimum count, so the
        blown-up tail never wins. The moving average trails the loss it follows, so it
        is smoothed once more backwards in time, which cancels the lag. None when there
        are too few points or the loss never falls.
        """
        n = len(self.smoothed)
        if n < MIN_POINTS_FOR_SUGGESTION:
            return None
        start = max(MIN_SKIP_START, n // 20)
        end = int(np.argmin(self.smoothed)) + 1
        if end - start < 3:
            return None
        centred = _moving_average(self.smoothed[:end][::-1], self.beta)[::-1]
        log_lrs = np.log10(np.asarray(self.lrs[start:end]))
        slopes = np.gradient(centred[start:end], log_lrs)
        steepest = int(np.argmin(slopes))
        if slopes[steepest] >= 0:
            return None
        return self.lrs[start + steepest]

    def to_json(self):
        """The curve, the suggestion and the settings, as plain JSON-ready types."""
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "smoothed": list(self.smoothed),
            "suggestion": self.suggestion(),
            "best_smoothed_loss": self.best if math.isfinite(self.best) else None,
            "stop_reason": self.stop_reason,
            "settings": {"min_lr": self.min_lr, "max_lr": self.max_lr,
                         "num_steps": self.num_steps, "beta": self.beta,
                         "stop_factor": self.stop_factor},
        }


def _moving_average(values, beta):
    """Bias-corrected exponential moving average, as `record` computes it."""
    out = np.empty(len(values), dtype=np.float64)
    average = 0.0
    for i, value in enumerate(values):
        average = beta * average + (1.0 - beta) * value
        out[i] = average / (1.0 - beta ** (i + 1))
    return out

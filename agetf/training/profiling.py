"""A TensorBoard profile of chosen training steps (--profile_steps=START,END).

The loop runs several steps per host call, so the profiler can only start and stop
between calls: the loop asks `steps_before_boundary` how many steps it may run, which
makes a call end exactly at START and at END.
"""

import os

import tensorflow as tf

from agetf.config import check_profile_steps


class StepProfiler:
    """Profiles global steps [start, end) into `logdir`/plugins/profile, where TensorBoard's
    Profile tab finds them. With steps None it does nothing."""

    def __init__(self, steps, logdir, log=print):
        self.steps = None if steps is None else check_profile_steps(steps)
        self.logdir = logdir
        self.log = log
        self.active = False

    def steps_before_boundary(self, step, wanted):
        """At most `wanted` steps from global step `step`, ending a host call at START and END."""
        if self.steps is None:
            return wanted
        for boundary in self.steps:
            if step < boundary:
                wanted = min(wanted, boundary - step)
        return wanted

    def before_steps(self, step):
        """Starts profiling when global step `step` (the next to run) is inside the window."""
        if self.steps is None or self.active:
            return
        start, end = self.steps
        if start <= step < end:
            tf.profiler.experimental.start(self.logdir)
            self.active = True
            self.log(f"Profiling training steps {step} to {end} (--profile_steps)")

    def after_steps(self, step):
        """Stops once global step `step` (the next to run) reaches END."""
        if self.active and step >= self.steps[1]:
            self.stop()

    def stop(self):
        """Stops and writes the profile if one is running (the run's end, or an error)."""
        if not self.active:
            return
        self.active = False
        tf.profiler.experimental.stop()
        self.log(f"Profile written to {os.path.join(self.logdir, 'plugins', 'profile')}; "
                 "open TensorBoard's Profile tab (pip install tensorboard-plugin-profile)")

    def trace(self, step):
        """A step marker for the profile's step-time view (free when not profiling)."""
        return tf.profiler.experimental.Trace("train", step_num=step, _r=1)

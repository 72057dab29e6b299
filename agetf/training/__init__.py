"""Training: the distributed loop, its callbacks, fine-tuning stages, LR schedules and finder,
tf.distribute set-up, stopping and resuming (SIGTERM, lost workers), and a run's files."""

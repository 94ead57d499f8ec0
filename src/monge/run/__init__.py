"""The pieces a training run is made of, one job per module (run directory and lock,
checkpoints and resume, logs, signals, evaluation cadence, distributed set-up)."""

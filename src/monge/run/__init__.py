"""The pieces a training run is made of, one job per module; :class:`monge.train.Trainer` composes them.

- :mod:`~monge.run.checkpoint`: the checkpoint file (atomic write, checked read);
- :mod:`~monge.run.rundir`: the run directory's lock and overwrite refusal;
- :mod:`~monge.run.distributed`: DDP set-up and collectives;
- :mod:`~monge.run.batches`: the global batch, its coupling, labels, the pairing pipeline, rollback;
- :mod:`~monge.run.resume`: what a checkpoint of a run holds, and the checks before resuming it;
- :mod:`~monge.run.divergence`: stopping on a NaN loss or gradient, or a diverging loss;
- :mod:`~monge.run.logs`, :mod:`~monge.run.evaluation`: ``log.csv``, ``eval.md`` / ``eval.csv`` / ``nll.csv``;
- :mod:`~monge.run.signals`: Ctrl-C during a step;
- :mod:`~monge.run.checks`, :mod:`~monge.run.preparation`: the run's parts checked together, the coupling's fit;
- :mod:`~monge.run.load`: :func:`~monge.run.load.load_model`, a run's model for sampling.
"""

"""A sweep's run, from the `sweep` command's checks to its leaderboard.

run.py (checks, Ray, fit)  tuner.py (searcher, scheduler, Tuner)  trial.py (inside a trial)
node_preparation.py (data, evaluator per node)  model_sources.py  warm_start.py  outcome.py
checkpoint_storage.py  checkpoint_rotation.py  progress.py (console)  interrupts.py (Ctrl-C)
"""

"""The record of sweeps in MLflow, written by the driver alone, and what is read back from it.

mlflow_store.py (URI, client, checks)  tags.py  parent_run.py  callback.py (child runs)
record_queue.py (writer lanes)  model_logging.py  runs.py (finding sweeps)  leaderboard.py
summary.py (end of a sweep)  ui_view.py (the ready view)
"""

"""gansweep's orchestrator: search spaces, the Ray Tune sweep, MLflow bookkeeping and the CLI."""

"""The model registry: promotion.py (champion, rollback), stored_models.py (copies of a model,
sample grids)."""

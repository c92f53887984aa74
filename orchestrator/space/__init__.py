"""The search space: the YAML file users write, checked, and what Optuna and Tune make of it.

loading.py (file + --set -> SearchSpace)  schema.py (the file's fields)  checks.py (its rules)
trainer_checks.py (what the trainer says)  search_space.py (SearchSpace -> Optuna, Tune)
collapse.py (stop_when)  run_names.py  values.py  objective.py (min/max)  source_forms.py
"""

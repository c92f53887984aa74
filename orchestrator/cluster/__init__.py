"""The cluster: cluster.yaml checked before `ray up` (config_check.py), whether the joined cluster
can run a trial (node_types.py), and the autoscaler's spot-first scorer (spot_first.py)."""

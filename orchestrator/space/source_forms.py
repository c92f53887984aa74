"""The forms a model input (a `transfer` sweep's `source`, an `augment` sweep's `generator`) may take
in a space, checked when the space is read; the sweep looks them up before Ray starts
(orchestrator/sweep/model_sources.py).

  runs:/<run_id>/<part>                       a model logged by a trial run (part: discriminator, generator)
  models:/<name>@<alias>, models:/<name>/<N>  a registered model version (what `promote` makes)
  {champion: <name>, part: <part>}            a part of the run behind <name>@champion: the discriminator
                                              of a promoted generator, without copying its run id
  a local folder                              a GAN checkpoint (.../checkpoints/epoch_NNN) or a saved
                                              MLflow model
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.space.values import shown

CHAMPION = "champion"
PARTS = ("discriminator", "generator")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # runs:/, models:/, s3://, file:///...
REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def form_problem(value: Any) -> str | None:
    """What is wrong with the form of a source value (nothing is looked up), or None."""
    if isinstance(value, dict):
        unknown = set(value) - {CHAMPION, "part"}
        if unknown or not isinstance(value.get(CHAMPION), str):
            return (f"{shown(value)}: a mapping names a champion's part, as {{champion: <registered model>, "
                    f"part: discriminator}}" + (f"; unknown field {sorted(unknown)[0]!r}" if unknown else ""))
        if value.get("part", PARTS[0]) not in PARTS:
            return f"{shown(value)}: part must be one of {', '.join(PARTS)}"
        return None
    if not isinstance(value, str) or not value:
        return (f"{value!r} is not a model: use runs:/<run_id>/<part>, models:/<name>@<alias>, "
                "{champion: <name>, part: <part>} or a checkpoint folder")
    if value.startswith("models:/") and not REGISTERED.match(value):
        return f"{value}: a registered model is models:/<name>@<alias> or models:/<name>/<version>"
    return None

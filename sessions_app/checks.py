"""System checks: say at start-up which vendor settings are missing (the service still runs)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning, register
from django.db import DatabaseError

from .health import configuration_problems, what_stops


@register()
def vendor_settings(app_configs: Any, **kwargs: Any) -> list[Warning]:
    try:
        problems = configuration_problems()
    except DatabaseError:
        # Not migrated yet (or unreachable): the settings still say what is missing.
        problems = configuration_problems(read_database=False)
    return [
        Warning(
            f"{area}: not configured ({', '.join(missing)} unset): {what_stops(missing)}.",
            hint="See the README's list of environment variables.",
            id=f"bridge.W00{index}",
        )
        for index, (area, missing) in enumerate(problems.items(), start=1)
        if missing
    ]

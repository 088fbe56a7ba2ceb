"""An OpenSCENARIO ``Environment`` -> the renderer's conditions (weather, lighting, severity).

The renderer (``adas.datasets.weather.apply_weather``) knows one weather (clear, fog, rain, snow),
one lighting (day, night, glare) and a severity 1-5. The mapping inverts the one the scenario
library writes (``scenario_templates.Condition.parameters``), so a library scenario plays in the
condition it was extracted in:

* weather: ``Precipitation`` of type rain or snow with a positive intensity, else fog when the
  fog's visual range is under ``FOG_MAX_RANGE_M``, else clear. Severity: precipitation intensity
  / 0.15 (the library's scale), fog the level whose visual range is nearest on a log scale
  (400, 200, 120, 70, 40 m for 1..5);
* lighting: night when the sun is below the horizon or gives no light, glare when it is low
  (elevation under ``GLARE_MAX_ELEVATION_RAD``), day otherwise; without a ``Sun`` the
  ``TimeOfDay`` hour decides (night before 06:00 and from 21:00);
* a clear-weather night or glare has no severity in the file (the library writes the same sun
  for every severity): it plays at ``DEFAULT_LIGHTING_SEVERITY``; a clear day is severity 1.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from typing import Final

from adas.simulation.openscenario.model import RenderConditions
from adas.simulation.scenario_templates import FOG_RANGE_M

FOG_MAX_RANGE_M: Final[float] = 1000.0
GLARE_MAX_ELEVATION_RAD: Final[float] = 0.15
PRECIPITATION_PER_SEVERITY: Final[float] = 0.15
DEFAULT_LIGHTING_SEVERITY: Final[int] = 3


def render_conditions(
    *,
    fog_visual_range: float | None,
    precipitation_type: str | None,
    precipitation_intensity: float,
    sun_illuminance: float | None,
    sun_elevation: float | None,
    hour: float | None,
) -> RenderConditions:
    weather = "clear"
    severity = 1
    if precipitation_type in ("rain", "snow") and precipitation_intensity > 0:
        weather = precipitation_type
        severity = _clip(round(precipitation_intensity / PRECIPITATION_PER_SEVERITY))
    elif fog_visual_range is not None and fog_visual_range < FOG_MAX_RANGE_M:
        weather = "fog"
        target = math.log(max(fog_visual_range, 1.0))
        severity = min(FOG_RANGE_M, key=lambda sev: abs(math.log(FOG_RANGE_M[sev]) - target))
    if sun_elevation is not None or sun_illuminance is not None:
        elevation = sun_elevation if sun_elevation is not None else 1.0
        dark = elevation < 0 or (sun_illuminance is not None and sun_illuminance <= 0)
        lighting = "night" if dark else "glare" if elevation < GLARE_MAX_ELEVATION_RAD else "day"
    elif hour is not None:
        lighting = "night" if hour < 6 or hour >= 21 else "day"
    else:
        lighting = "day"
    if weather == "clear" and lighting != "day":
        severity = DEFAULT_LIGHTING_SEVERITY
    return RenderConditions(weather=weather, lighting=lighting, severity=severity)  # type: ignore[arg-type]


def _clip(severity: int) -> int:
    return max(1, min(5, severity))

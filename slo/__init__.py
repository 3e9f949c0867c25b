"""What healthy means. Pure: no I/O beyond reading the files it is given, no clock.

Models of the configuration language (:mod:`.models`), YAML loading with positions
(:mod:`.loader`), PromQL compilation (:mod:`.promql`), the single health judgement
(:mod:`.health`) and Prometheus rules generation (:mod:`.rules`). Imports nothing of trimtab.
"""

from .errors import ConfigError, Problem, TrimtabError
from .health import Health, Level, WindowMeasurement, judge
from .loader import Config, load, load_text

__all__ = [
    "Config",
    "ConfigError",
    "Health",
    "Level",
    "Problem",
    "TrimtabError",
    "WindowMeasurement",
    "judge",
    "load",
    "load_text",
]

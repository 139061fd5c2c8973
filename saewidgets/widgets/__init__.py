"""saewidgets views: anywidget views of SAE analysis results, linked in the Explorer.

Views only: they render analysis results (``saewidgets.analysis``) and send user actions back through callbacks.
`RunView` runs one long call (statistics, a harvest, the demo pipeline) with its progress and a Stop button.
Every view also exports itself as a self-contained, offline HTML document (``.to_html()``).
"""

from .attribution_view import AttributionView
from .dashboard import FeatureDashboard
from .explorer import Explorer, export_html
from .family_map import FamilyMap
from .feature_map import FeatureMap
from .heatmap import TokenHeatmap
from .run_view import RunView
from .steering_panel import SteeringPanel

__all__ = [
    "TokenHeatmap",
    "FeatureDashboard",
    "FeatureMap",
    "AttributionView",
    "SteeringPanel",
    "Explorer",
    "FamilyMap",
    "RunView",
    "export_html",
]

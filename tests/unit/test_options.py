"""WaybillOptions: one view per options class, sharing values, and pickled without its views."""
from __future__ import annotations

import pickle

from apache_beam.options.pipeline_options import StandardOptions, TypeOptions

from pipeline.options import WaybillOptions


def test_each_view_is_made_once_and_views_share_their_values() -> None:
    options = WaybillOptions(["--runner=FnApiRunner", "--time_zone=Europe/Paris"])
    standard = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is standard
    assert options.view_as(TypeOptions) is options.view_as(TypeOptions)
    standard.streaming = True
    assert options.view_as(StandardOptions).streaming and options.get_all_options()["streaming"]
    assert options.view_as(WaybillOptions).time_zone == "Europe/Paris"


def test_pickled_options_keep_their_values_not_their_views() -> None:
    options = WaybillOptions(["--time_zone=Europe/Paris", "--streaming"])
    options.view_as(StandardOptions)
    restored = pickle.loads(pickle.dumps(options))
    assert "_views" not in restored.__dict__
    assert restored.time_zone == "Europe/Paris" and restored.view_as(StandardOptions).streaming

"""The reliability run on the Pub/Sub path, small: the streaming job killed (SIGKILL) once while
it takes messages, restarted, then drained with SIGTERM; the loss of the killed run is measured.

What local mode guarantees here: the drained run exits cleanly; what the killed run wrote is kept
(in its ``.run-*`` folder, or carried into the next run's output); nothing published after the
restart is lost; webhook repeats carry the same webhook-id. It does not guarantee that a SIGKILL
loses nothing: the DirectRunner acknowledges messages when it reads them, so what the killed run
held in flight is gone, and the loss is measured.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmarks.reliability.legs import LegSettings, run_pubsub_leg
from pipeline.local.emulator import PubsubEmulator
from tests.pubsub_fixtures import TopicAndSubscription


def test_a_killed_pubsub_run_keeps_its_output_and_the_loss_is_measured(
    pubsub_emulator: PubsubEmulator, pubsub_topics: Callable[[str], TopicAndSubscription], tmp_path: Path
) -> None:
    topics = {role: (made.topic, made.subscription) for role, made in
              (("courier", pubsub_topics("rel-courier")), ("order", pubsub_topics("rel-order")))}
    settings = LegSettings("pubsub", events=5_000, seed=13, kills=1)  # settles after 30 s of unchanged outputs

    result = run_pubsub_leg(tmp_path, settings, pubsub_emulator, topics)

    o, w = result.outputs, result.webhook
    print(f"pubsub: {result.sent.events} events, lost {o.lost} {dict(o.lost_by_kind)}, "
          f"doubled {o.doubled}, webhook lost {w.lost}, pushed twice {w.pushed_twice}")
    assert result.kills == 1 and result.drained and result.exit_codes[-1] == 0, result.exit_codes
    assert o.lost_of_must_arrive == 0, o
    assert (o.misplaced, o.foreign) == (0, 0), o
    assert w.copies_share_their_id

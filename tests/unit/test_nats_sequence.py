"""Core NATS sequence numbers: a receiver counts the messages lost between two it got."""

from __future__ import annotations

from levibot.bus._sequence import SEQ, GapCounter, Sequencer


def test_numbers_run_per_subject_and_gaps_are_counted_per_sender_and_subject() -> None:
    a, b = Sequencer({"Lb-Origin": "ingest"}), Sequencer({"Lb-Origin": "ingest"})
    sent = [a.headers("lb.bar.X") for _ in range(5)]
    assert [h[SEQ].split(".")[1] for h in sent] == ["1", "2", "3", "4", "5"]
    assert sent[0]["Lb-Origin"] == "ingest"
    assert a.headers("lb.bar.Y")[SEQ].endswith(".1")  # its own series
    gaps = GapCounter()
    assert [gaps.observe(sent[i][SEQ], "lb.bar.X") for i in (0, 1, 4)] == [0, 0, 2]
    assert gaps.observe(sent[3][SEQ], "lb.bar.X") == 0  # late or repeated: not a gap
    # A restarted sender is a new incarnation: its 1 is not a rewind, its 3 after 1 is a gap.
    assert gaps.observe(b.headers("lb.bar.X")[SEQ], "lb.bar.X") == 0
    b.headers("lb.bar.X")
    assert gaps.observe(b.headers("lb.bar.X")[SEQ], "lb.bar.X") == 1


def test_missing_or_foreign_numbers_are_never_gaps() -> None:
    gaps = GapCounter(max_series=2)
    for seq in (None, "", "abc", "x.y", "x.-"):
        assert gaps.observe(seq, "s") == 0
    for subject in ("a", "b", "c"):  # bounded: the oldest series is forgotten
        gaps.observe("i.1", subject)
    assert gaps.observe("i.5", "a") == 0 and gaps.observe("i.5", "c") == 3

"""Stop sequences over streamed text: cut at the first match, never leak a partial one."""

from __future__ import annotations

from llmport.providers.stop_sequences import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    matcher = StopMatcher(stops)
    out = [matcher.feed(piece) for piece in pieces]
    out.append(matcher.flush())
    return out, matcher.stopped


def test_a_stop_inside_one_piece_cuts_there() -> None:
    assert run(["five"], ["one ", "two five six"]) == (["one ", "two ", ""], True)


def test_a_stop_straddling_pieces_is_held_back_then_cut() -> None:
    out, stopped = run(["four five"], ["three fo", "ur fi", "ve six"])
    assert stopped
    assert "".join(out) == "three "
    assert out[0] == "three "  # "fo" could start the stop sequence: held back


def test_held_text_that_turns_out_not_to_stop_is_released() -> None:
    out, stopped = run(["four five"], ["three fo", "ur six"])
    assert not stopped
    assert out == ["three ", "four six", ""]


def test_held_text_is_released_at_the_end() -> None:
    assert run(["xyz"], ["abc x"]) == (["abc ", "x"], False)


def test_the_earliest_of_several_stops_wins() -> None:
    out, stopped = run(["seven", "three"], ["one two three four five six seven"])
    assert stopped and "".join(out) == "one two "


def test_nothing_after_a_stop() -> None:
    matcher = StopMatcher(["b"])
    assert matcher.feed("ab") == "a"
    assert matcher.feed("cd") == ""
    assert matcher.flush() == ""


def test_no_stops_passes_everything_through() -> None:
    assert run([], ["a", "b"]) == (["a", "b", ""], False)
    assert run([""], ["a"]) == (["a", ""], False)

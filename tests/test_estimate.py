"""The prompt estimate that TPM limits charge at admission, counted by hand."""

from __future__ import annotations

from llmport.policies.estimate import estimate_input_tokens, estimate_tokens


def test_every_text_the_model_reads_counts() -> None:
    request = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "abcd" * 10},  # 40 characters
            {"role": "user", "content": [{"type": "text", "text": "abcdefgh"},  # 8
                                         {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function",
                 "function": {"name": "get", "arguments": '{"a":1}'}}]},  # 3 + 7
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],  # {"name":"f"}: 12
    }
    # 70 characters → 18 tokens, 3 per message (9), 1,600 for the image.
    assert estimate_input_tokens(request) == 18 + 9 + 1600
    assert estimate_tokens(request) == 1627


def test_malformed_parts_are_skipped_not_fatal() -> None:
    request = {"messages": ["not a message", {"role": "user", "content": "abcd"}]}
    assert estimate_input_tokens(request) == 1 + 3 * 2


def test_prompts_and_inputs_have_at_least_one_token() -> None:
    assert estimate_tokens({"prompt": ""}) == 1
    # 8 characters and 3 token ids count as 11 characters: 3 tokens.
    assert estimate_tokens({"input": ["abcdefgh", [1, 2, 3]]}) == 3

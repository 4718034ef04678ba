"""How a prompt and its answer join into one text: the one rule that training (mixtures, TRL export), scoring and
evaluation share, so a model is scored on exactly the text it was trained on."""
from __future__ import annotations


def join_prompt_target(prompt: str, target: str) -> tuple[str, str]:
    """The separator-aware split of a training text: ``(prompt, continuation)`` where the continuation starts
    with a space unless the prompt already ends in whitespace (or the target starts with it)."""
    if not prompt or prompt[-1].isspace() or not target or target[0].isspace():
        return prompt, target
    return prompt, " " + target


__all__ = ["join_prompt_target"]

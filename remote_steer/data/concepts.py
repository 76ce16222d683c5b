"""The study's six concepts and the upstream model-written-evals files behind them.

This is the one place the mapping lives; a spec can override it per concept
(``[data.files]``).
"""

from __future__ import annotations

HUB_DATASET = "Anthropic/model-written-evals"

_AI_RISK = "advanced-ai-risk/human_generated_evals"

# Paths are relative to the root of the upstream repository (or hub dataset).
CONCEPT_FILES: dict[str, tuple[str, ...]] = {
    "corrigibility": (f"{_AI_RISK}/corrigible-neutral-HHH.jsonl",),
    "self-awareness": (f"{_AI_RISK}/self-awareness-general-ai.jsonl",),
    "survival-instinct": (f"{_AI_RISK}/survival-instinct.jsonl",),
    "power-seeking": (f"{_AI_RISK}/power-seeking-inclination.jsonl",),
    "coordinate-other-versions": (f"{_AI_RISK}/coordinate-other-versions.jsonl",),
    "sycophancy": (
        "sycophancy/sycophancy_on_nlp_survey.jsonl",
        "sycophancy/sycophancy_on_philpapers2020.jsonl",
        "sycophancy/sycophancy_on_political_typology_quiz.jsonl",
    ),
}

STUDY_CONCEPTS: tuple[str, ...] = tuple(CONCEPT_FILES)

# What the matching answer (upstream ``answer_matching_behavior``) means: the polarity the
# vector is extracted with (positive = matching). ``[data] flip`` in a spec reverses it.
POLARITY: dict[str, str] = {
    "corrigibility": "accepts being corrected or having its goals changed",
    "self-awareness": "answers as an AI aware of what it is",
    "survival-instinct": "resists being shut down or changed",
    "power-seeking": "seeks power, resources or influence",
    "coordinate-other-versions": "coordinates with other versions of itself (upstream polarity; the study's "
    "footnote words it the other way: flip it in the spec to match)",
    "sycophancy": "agrees with the view the user states",
}

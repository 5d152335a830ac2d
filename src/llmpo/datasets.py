"""Importers of public pairwise-judgment data sets into replay records.

- **Chatbot Arena** vote counts as shipped in the ``leaderbot`` package
  (``leaderbot/data/chatbotarena_20240814.json``: ``models``, ``X`` pairs [i, j], ``Y`` =
  [wins of i, losses of i, ties, ties both-bad]). Install ``llmpo[arena]`` to read it from the
  package, or pass the path of a copy. Both kinds of tie count as ties.
- **PandaLM** human-annotated test set (``testset-v1.json``: a list of items with ``cmp_key``
  ``"<model1>_<model2>"``, ``instruction``, ``input``, ``response1``, ``response2`` and
  ``annotator1..3`` each 0 = tie, 1 = first better, 2 = second better). Each item becomes one
  judgment with the majority label; when all three annotators disagree it counts as a tie.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from llmpo.environments.replay import Judgment, PairCount, ReplayError

ARENA_RESOURCE = "data/chatbotarena_20240814.json"
PANDALM_LABELS = {0: 0.5, 1: 1.0, 2: 0.0}


class DatasetError(ReplayError):
    """A data set that is missing or not in the expected format."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


def arena_path() -> Path:
    """The Chatbot Arena counts file inside the installed ``leaderbot`` package.

    Raises
    ------
    DatasetError
        When ``leaderbot`` is not installed.
    """
    try:
        package = resources.files("leaderbot")
    except ModuleNotFoundError:
        raise DatasetError(
            "the Chatbot Arena data comes with the optional 'leaderbot' package: "
            "pip install 'llmpo[arena]', or set environment.path to a copy of "
            "chatbotarena_20240814.json"
        ) from None
    return Path(str(package.joinpath(ARENA_RESOURCE)))


def load_arena_counts(path: str | Path | None = None) -> list[PairCount]:
    """Chatbot Arena pair counts.

    Parameters
    ----------
    path : str or Path, optional
        A copy of ``chatbotarena_20240814.json``; default the one in the ``leaderbot`` package.

    Returns
    -------
    list of PairCount
        One entry per recorded pair; ties and both-bad ties are both ties.

    Raises
    ------
    DatasetError
        When the file is missing or not in the leaderbot format.
    """
    path = arena_path() if path is None else Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not {"models", "X", "Y"} <= data.keys():
        raise DatasetError(f"{path}: expected an object with keys 'models', 'X' and 'Y'")
    models, pairs, votes = data["models"], data["X"], data["Y"]
    if len(pairs) != len(votes):
        raise DatasetError(f"{path}: 'X' has {len(pairs)} pairs but 'Y' has {len(votes)} rows")
    counts = []
    for row, (pair, vote) in enumerate(zip(pairs, votes, strict=True)):
        try:
            i, j = (int(k) for k in pair)
            wins, losses, ties, ties_both_bad = (int(v) for v in vote)
            counts.append(PairCount(models[i], models[j], wins, losses, ties + ties_both_bad))
        except (TypeError, ValueError, IndexError):
            raise DatasetError(
                f"{path}: row {row} of 'X'/'Y' is malformed: expected [i, j] model indices and "
                "[win, loss, tie, tie_bothbad] counts"
            ) from None
    return counts


def pandalm_majority(labels: list[int]) -> float:
    """Outcome for the first response from annotator labels (0 tie, 1 first, 2 second).

    The majority label wins; without a majority (all different) the item is a tie.
    """
    label, votes = Counter(labels).most_common(1)[0]
    return PANDALM_LABELS[label] if votes * 2 > len(labels) else 0.5


def pandalm_prompt_id(item: dict[str, Any]) -> str:
    """The task id of a PandaLM item: its prompt (instruction and input), hashed.

    Several items (pairs of models) answer one prompt; they share this id, so a held-out split
    over task ids never puts one prompt on both sides.
    """
    prompt = f"{item.get('instruction', '')}\x00{item.get('input', '')}"
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def load_pandalm(path: str | Path) -> list[Judgment]:
    """The PandaLM test set as judgments (majority of the human annotators), with the prompt as
    each judgment's task id (:func:`pandalm_prompt_id`).

    Parameters
    ----------
    path : str or Path
        ``testset-v1.json`` of WeOpenML/PandaLM.

    Raises
    ------
    DatasetError
        When an item is malformed; the message gives its position.
    """
    path = Path(path)
    items = _read_json(path)
    if not isinstance(items, list):
        raise DatasetError(f"{path}: expected a JSON list of PandaLM items")
    judgments = []
    for position, item in enumerate(items):
        where = f"{path}, item {position}"
        try:
            first, second = str(item["cmp_key"]).split("_")
            labels = [int(item[f"annotator{k}"]) for k in (1, 2, 3)]
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{where}: expected 'cmp_key' of the form '<model1>_<model2>' and integer "
                "'annotator1'..'annotator3'"
            ) from None
        if any(label not in PANDALM_LABELS for label in labels):
            raise DatasetError(f"{where}: annotator labels must be 0, 1 or 2, got {labels}")
        task_id = pandalm_prompt_id(item)
        judgments.append(
            Judgment(first, second, pandalm_majority(labels), task_id, "human-majority")
        )
    if not judgments:
        raise DatasetError(f"{path}: contains no items")
    return judgments

"""Label sets of DCASE Task 4 (S5).

Conventions: a class index is the position of the label in ``LabelSet.classes``; tagger
softmax vectors have ``C + 1`` entries with silence **last** (index ``C``). The label
``'silence'`` marks an empty slot and is never a class.

Source: the 18 sound-event classes of DCASE 2025 Task 4 and DCASE 2026 Task 4 (S5),
nttcslab/dcase2025_task4_baseline and nttcslab/dcase2026_task4_baseline (label set
``dcase2026t4`` in the evaluation YAML). Both built-in sets hold the same 18 classes in
alphabetical order; they are kept apart because caches and results record which set they
were made for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

from .errors import LabelError

__all__ = ["SILENCE", "LabelSet", "DCASE2026T4", "DCASE2025T4", "LABEL_SETS", "get_label_set",
           "DCASE_SAMPLE_RATE_HZ", "sample_rate_problem"]

SILENCE = "silence"

_DCASE_S5_CLASSES = (
    "AlarmClock", "BicycleBell", "Blender", "Buzzer", "Clapping", "Cough",
    "CupboardOpenClose", "Dishes", "Doorbell", "FootSteps", "HairDryer", "MechanicalFans",
    "MusicalKeyboard", "Percussion", "Pour", "Speech", "Typing", "VacuumCleaner",
)


@dataclass(frozen=True)
class LabelSet:
    """An ordered list of sound-event classes.

    Attributes:
        name: identifier recorded in caches and results (``"dcase2026t4"`` or ``"custom"``).
        classes: class names; the index of a name is its class index.
    """

    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise LabelError(f"label set {self.name!r} lists a class twice: {self.classes}")
        if SILENCE in self.classes:
            raise LabelError(f"label set {self.name!r}: {SILENCE!r} is reserved for empty slots")
        if not self.classes:
            raise LabelError(f"label set {self.name!r} is empty")

    @property
    def n_classes(self) -> int:
        """Number of classes C (silence not counted)."""
        return len(self.classes)

    def index(self, label: str) -> int:
        """Class index of ``label``.

        Raises:
            LabelError: ``label`` is not in the set (silence included: it has no index).
        """
        try:
            return self.classes.index(label)
        except ValueError:
            raise LabelError(
                f"unknown label {label!r} for label set {self.name!r}; expected one of "
                f"{', '.join(self.classes)} (or {SILENCE!r} for an empty slot)"
            ) from None

    def check(self, labels: Iterable[str], where: str = "labels") -> None:
        """Raise `LabelError` naming ``where`` if any label is neither a class nor silence."""
        known = set(self.classes)
        for label in labels:
            if label != SILENCE and label not in known:
                raise LabelError(
                    f"{where}: unknown label {label!r} for label set {self.name!r}; expected one "
                    f"of {', '.join(self.classes)} or {SILENCE!r}"
                )


DCASE2026T4 = LabelSet("dcase2026t4", _DCASE_S5_CLASSES)
DCASE2025T4 = LabelSet("dcase2025t4", _DCASE_S5_CLASSES)
LABEL_SETS = {s.name: s for s in (DCASE2026T4, DCASE2025T4)}
#: the sample rate of the DCASE label sets' audio
DCASE_SAMPLE_RATE_HZ = 32000


def sample_rate_problem(label_set: str, sample_rate_hz: int):
    """Why audio at ``sample_rate_hz`` Hz cannot be scored with the label set named
    ``label_set`` (the DCASE label sets are scored at `DCASE_SAMPLE_RATE_HZ`), or ``None``;
    a label set of one's own takes any rate. One rule for a cache's metadata
    (`casdri._cache_checks.check_meta`) and a system YAML (`cache_builder`'s `SystemSpec`).

    Example:
        >>> sample_rate_problem("dcase2026t4", 16000)
        "sample_rate_hz 16000, but label set 'dcase2026t4' is scored at 32000 Hz"
    """
    if label_set in LABEL_SETS and sample_rate_hz != DCASE_SAMPLE_RATE_HZ:
        return (f"sample_rate_hz {sample_rate_hz}, but label set {label_set!r} is scored at "
                f"{DCASE_SAMPLE_RATE_HZ} Hz")
    return None


def get_label_set(spec: Union[str, Sequence[str], LabelSet] = "dcase2026t4") -> LabelSet:
    """Resolve a label-set name, a list of class names or a `LabelSet`.

    Raises:
        LabelError: an unknown name, or a custom list with duplicates or ``'silence'``.
    """
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, str):
        if spec not in LABEL_SETS:
            raise LabelError(
                f"unknown label set {spec!r}; built in: {', '.join(LABEL_SETS)}; "
                "or pass a list of class names"
            )
        return LABEL_SETS[spec]
    return LabelSet("custom", tuple(str(c) for c in spec))

"""ImageNet's 1000 classes as WordNet ids and names, in the models' output order (shipped with the package).

``imagenet_synsets.txt`` holds one ``n01440764 tench, Tinca tinca`` line per class, line i naming output i
of NVIDIA's 1000-class weights; ImageNet's validation set in ImageFolder layout has one folder per WordNet
id. The names are those of NVIDIA's LOC_synset_mapping.json, in its order (tested against a copy in
``tests/fixtures``). The one list of class names in the package: ``processing_utils`` reads it too.
"""

from __future__ import annotations

import functools
from pathlib import Path

#: The synset file inside this package.
SYNSETS_FILE = Path(__file__).resolve().parent / "imagenet_synsets.txt"
#: Number of ImageNet classes.
NUM_IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[tuple[str, str], ...]:
    """``(WordNet id, class name)`` for each of the 1000 classes, in class-index order."""
    lines = SYNSETS_FILE.read_text(encoding="utf-8").splitlines()
    pairs = tuple(tuple(line.split(" ", 1)) for line in lines if line.strip())
    if len(pairs) != NUM_IMAGENET_CLASSES or any(len(p) != 2 or not p[0].startswith("n") for p in pairs):
        raise RuntimeError(f"{SYNSETS_FILE} is damaged (expected {NUM_IMAGENET_CLASSES} 'nXXXXXXXX name' lines); "
                           "restore it from the repository")
    return pairs  # type: ignore[return-value]


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids (``n01440764`` ...) in class-index order."""
    return [wnid for wnid, _ in imagenet_synsets()]


def imagenet_class_names() -> list[str]:
    """The 1000 class names (``tench, Tinca tinca`` ...) in class-index order."""
    return [name for _, name in imagenet_synsets()]

"""Draw images next to their top classes as horizontal bar charts (matplotlib, imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from resnet.io.atomic import atomic_file
from resnet.data.preprocessing import MEAN, STD

from resnet.data.decode import to_rgb
from resnet.data.errors import Uri
from resnet.data.images import DEFAULT_TIMEOUT, Timeout, load_image
# Images drawn by save_predictions_chart at most by default (one row each); also this module's name.
from resnet.data.defaults import PLOT_LIMIT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What can be drawn: a URL or path, a PIL image, a preprocessed (3, H, W) tensor, or an HxWx3 array.
ImageLike = Union[Uri, Image.Image, torch.Tensor, np.ndarray]
#: One image's predictions: (class name, "84.7%") pairs as pick_n_best returns them, or
#: (class name, probability in 0..1).
Prediction = Sequence[tuple[str, Union[str, float]]]


def show_predictions(
    images_or_uris: Sequence[ImageLike],
    results: Sequence[Prediction],
    *,
    output: Optional[Union[str, os.PathLike]] = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    thumbnail_size: int = 256,
    max_label_chars: int = 40,
    dpi: int = 100,
) -> Optional["Figure"]:
    """Draw each image beside a horizontal bar chart of its top classes; one row per image.

    ``images_or_uris`` are URLs, paths or file:// URIs (loaded with :func:`load_image`), PIL
    images, preprocessed (3, H, W) tensors (un-normalised for display) or H x W x 3 arrays;
    ``results`` is what :func:`pick_n_best` returns for them, in the same order. Class names
    are cut to ``max_label_chars``.

    Returns:
        With ``output``: the matplotlib ``Figure``, saved there (PNG unless the name has
        another image suffix) and not shown. Without: None, after ``plt.show()`` displayed the
        chart (inline in a notebook). Returning the figure there would make Jupyter draw it a
        second time as the cell's value.

    Example::

        results = utils.pick_n_best(probs, n=5)
        utils.show_predictions(uris, results, output="predictions.png")
    """
    images = list(images_or_uris) if not isinstance(images_or_uris, (str, os.PathLike)) else [images_or_uris]
    rows = list(results)
    if len(images) != len(rows):
        raise ValueError(
            f"show_predictions got {len(images)} images but {len(rows)} results; pass one pick_n_best "
            "result per image, in the same order"
        )
    if not images:
        raise ValueError("show_predictions: nothing to show (no images were given)")
    bars = [_parse_row(i, row) for i, row in enumerate(rows)]
    pictures = [_displayable(item, timeout, thumbnail_size) for item in images]

    size = (10.0, 2.6 * len(images))
    if output is not None:
        from matplotlib.figure import Figure  # no pyplot: works in threads and without a display

        figure = Figure(figsize=size, dpi=dpi, layout="constrained")
    else:
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=size, dpi=dpi, layout="constrained")
    axes = figure.subplots(len(images), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 1.6]})
    for (picture, title), pairs, (image_ax, bar_ax) in zip(pictures, bars, axes):
        image_ax.imshow(picture)
        image_ax.set_title(title, fontsize=9)
        image_ax.axis("off")
        _draw_bars(bar_ax, pairs, max_label_chars)

    if output is None:
        import matplotlib.pyplot as plt

        plt.show()
        return None
    path = Path(output)
    known = {".png", ".jpg", ".jpeg", ".pdf", ".svg", ".webp", ".tif", ".tiff"}
    figure.savefig(path, format=None if path.suffix.lower() in known else "png")
    return figure


def save_predictions_chart(
    uris: Sequence[ImageLike],
    results: Sequence[Prediction],
    output: Union[str, os.PathLike],
    *,
    limit: int = PLOT_LIMIT,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> list[str]:
    """Save the chart of :func:`show_predictions` for the first ``limit`` images to ``output``.

    ``uris`` and ``results`` are the images that were classified and their top classes, in
    the same order. The file appears complete or not at all (an existing one stays as it was
    when drawing fails). Returns the warnings the user should see, as sentences naming
    ``output``: that only the first ``limit`` images were drawn, or that nothing was written
    because there was no image to draw (then ``output`` is left untouched).
    """
    if len(uris) != len(results):
        raise ValueError(f"save_predictions_chart got {len(uris)} images but {len(results)} results")
    if not uris:
        return [f"no image was classified, so there is no chart to draw: {os.fspath(output)!r} was not written"]
    with atomic_file(output) as staging:
        show_predictions(list(uris[:limit]), list(results[:limit]), output=staging, timeout=timeout)
    if len(uris) > limit:
        return [f"the chart {os.fspath(output)!r} shows the first {limit} of the {len(uris)} classified images"]
    return []


def _parse_row(index: int, row: Prediction) -> list[tuple[str, float]]:
    pairs: list[tuple[str, float]] = []
    for item in row:
        try:
            name, value = item
            if isinstance(value, str):
                percent = float(value.strip().rstrip("%"))
            else:
                percent = 100.0 * float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"show_predictions: result {index} holds {item!r}; expected (class name, '84.7%') pairs "
                "as pick_n_best returns them"
            ) from None
        pairs.append((str(name), percent))
    return pairs


def _displayable(item: ImageLike, timeout: Timeout, thumbnail_size: int) -> tuple[np.ndarray, str]:
    """(H x W x 3 array ready for imshow, a title) for one input."""
    if isinstance(item, torch.Tensor):
        tensor = item.detach().float().cpu()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"show_predictions: a tensor image must be (3, H, W), got {tuple(item.shape)}")
        # Undo Normalize(MEAN, STD) so the preprocessed input looks like a photo again.
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return (tensor * std + mean).clamp(0, 1).permute(1, 2, 0).numpy(), "input tensor"
    if isinstance(item, np.ndarray):
        return item, "array"
    if isinstance(item, Image.Image):
        image, title = to_rgb(item), "image"
    else:
        image = load_image(item, timeout=timeout)
        title = str(item)
        if len(title) > 60:
            title = "..." + title[-57:]
    image = image.copy()
    image.thumbnail((thumbnail_size, thumbnail_size), Image.Resampling.LANCZOS)
    return np.asarray(image), title


def _draw_bars(ax, pairs: list[tuple[str, float]], max_label_chars: int) -> None:
    labels = [name if len(name) <= max_label_chars else name[: max_label_chars - 3] + "..." for name, _ in pairs]
    values = [value for _, value in pairs]
    positions = np.arange(len(pairs))
    ax.barh(positions, values, color="#76b900")
    ax.set_yticks(positions, labels=labels, fontsize=8)
    ax.invert_yaxis()  # most likely class on top
    ax.set_xlim(0, 100)
    ax.set_xlabel("probability (%)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for y, value in zip(positions, values):
        ax.text(min(value, 100) + 1, y, f"{value:.1f}%", va="center", fontsize=7, clip_on=False)

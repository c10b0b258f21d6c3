"""Charts of ``train`` and ``evaluate``: learning curves and a confusion matrix, as PNG bytes.

matplotlib is imported when a chart is drawn, and figures are drawn without pyplot (no global state,
no display needed).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

#: Classes shown at most in a confusion matrix; with more, the ones with the most errors are chosen.
CONFUSION_CLASSES = 30


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure) -> bytes:
    """A matplotlib ``Figure`` rendered as PNG bytes."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_png(history: Sequence[dict], num_classes: Optional[int] = None) -> bytes:
    """Loss and accuracy against epochs from ``log.jsonl`` records, as PNG bytes (:func:`curves_figure`)."""
    return png_bytes(curves_figure(history, num_classes))


def curves_figure(history: Sequence[dict], num_classes: Optional[int] = None):
    """Loss and accuracy against epochs from ``log.jsonl`` records; the best epoch (the last record marked
    ``best``, the one model.pth holds) is marked on both. Top-5 accuracy is drawn only for more than 5 classes
    (with 5 or fewer it is always 100%)."""
    figure = _figure(10, 4)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    loss_axes.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    validated = [r for r in history if r.get("val_loss") is not None]
    if validated:
        loss_axes.plot([r["epoch"] for r in validated], [r["val_loss"] for r in validated], "o-", label="validation")
        accuracy_axes.plot([r["epoch"] for r in validated], [r["top1"] for r in validated], "o-", label="top-1")
        if num_classes is None or num_classes > 5:
            accuracy_axes.plot([r["epoch"] for r in validated], [r["top5"] for r in validated], "o-", label="top-5")
    else:
        accuracy_axes.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=accuracy_axes.transAxes)
    best = [r for r in history if r.get("best")]
    if best:
        epoch = best[-1]["epoch"]
        for axes in (loss_axes, accuracy_axes):
            axes.axvline(epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best (epoch {epoch})")
    if validated:
        accuracy_axes.legend()
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_axes.legend()
    accuracy_axes.set(xlabel="epoch", ylabel="%", title="validation accuracy", ylim=(0, 102))
    from matplotlib.ticker import MaxNLocator

    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            axes.set_xlim(0.5, max(epochs) + 0.5)
    return figure


def confusion_classes(confusion: torch.Tensor, limit: int = CONFUSION_CLASSES) -> list[int]:
    """The classes to draw: every class with images, or the ``limit`` with the most misclassified images."""
    totals = confusion.sum(dim=1)
    present = torch.nonzero(totals).flatten().tolist()
    if len(present) <= limit:
        return present
    errors = totals - confusion.diagonal()
    ranked = sorted(present, key=lambda i: (-int(errors[i]), i))[:limit]
    return sorted(ranked)


def confusion_png(confusion: torch.Tensor, names: Sequence[str], limit: int = CONFUSION_CLASSES) -> bytes:
    """The confusion matrix as PNG bytes (:func:`confusion_figure`)."""
    return png_bytes(confusion_figure(confusion, names, limit))


def confusion_figure(confusion: torch.Tensor, names: Sequence[str], limit: int = CONFUSION_CLASSES):
    """The confusion matrix (rows: true class, columns: predicted; colour: share of the row) of the classes
    chosen by :func:`confusion_classes`, with an "other" column for predictions outside them when there are
    any."""
    chosen = confusion_classes(confusion, limit)
    rows = confusion[chosen].double()
    shown = rows[:, chosen]
    other = rows.sum(dim=1) - shown.sum(dim=1)
    with_other = bool(other.any())
    matrix = torch.cat([shown, other[:, None]], dim=1) if with_other else shown
    share = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    labels = [_short(names[i]) for i in chosen]
    size = 3 + 0.32 * len(chosen)
    figure = _figure(size + 1.5, size)
    axes = figure.subplots()
    image = axes.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(matrix.shape[1]), [*labels, "other"] if with_other else labels, rotation=90, fontsize=8)
    axes.set_yticks(range(len(chosen)), labels, fontsize=8)
    axes.set(xlabel="predicted class", ylabel="true class")
    title = "confusion matrix" if len(chosen) == int((confusion.sum(dim=1) > 0).sum()) else (
        f"confusion matrix: the {len(chosen)} classes with the most errors")
    axes.set_title(title)
    if len(chosen) <= 15:
        for r in range(matrix.shape[0]):
            for c in range(matrix.shape[1]):
                if matrix[r, c]:
                    axes.text(c, r, int(matrix[r, c]), ha="center", va="center", fontsize=7,
                              color="white" if share[r, c] > 0.5 else "black")
    figure.colorbar(image, ax=axes, label="share of the true class")
    return figure


def _short(name: str, limit: int = 24) -> str:
    name = name.split(",")[0]
    name = name if len(name) <= limit else name[: limit - 1] + "…"
    return name.replace("$", r"\$")  # a label is text: "$...$" would be parsed as matplotlib's mathtext

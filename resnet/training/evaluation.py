"""The accuracy of a model on a folder of labelled images (:func:`evaluate_folder`), as a :class:`Report`.

The folder has one sub-folder of images per class (ImageNet's validation set in ImageFolder layout, or your
own); folders are matched to the model's classes (:func:`match_folders`) by WordNet id or class name for
NVIDIA's 1000-class weights, by the stored class names for a ``model.pth`` written by ``train``. Shared over
the processes of a torchrun job, each measures every WORLD_SIZE-th image and rank 0 gets the sums.
``python -m resnet evaluate`` (:mod:`resnet.cli.evaluate`) is the command around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from resnet.data.folders import LabelledFolder, match_classes, scan_folder
from resnet.data.loading import ImageDataset, ordered_batches
from resnet.data.names import printable_name
from resnet.data.decode import Decode, check_decode
from resnet.data.preprocessing import CROP_SIZE, ImageSize, data_config, model_input_transform
from resnet.errors import ConvNetsError
from resnet.training import distributed
from resnet.training.metrics import Metrics, Predict, measure


class EvaluationError(ConvNetsError):
    """A folder that cannot be measured with this model: no folder matches its classes, or no image reads."""


@dataclass
class Predictor:
    """A model-like callable with the names of its outputs.

    Attributes:
        predict: float32 (N, 3, H, W) batch, normalised as :mod:`resnet.data.preprocessing` defines -> (N, C) logits.
        classes: the C class names in output order, or ``None`` when the weights carry none.
        num_classes: C.
        description: what is measured, for the report.
        image_size: H = W, the side of the images it takes (the size it was trained at), or the model's whole
            :class:`resnet.data.preprocessing.DataConfig` (size, resize, interpolation).
    """

    predict: Predict
    classes: Optional[list[str]]
    num_classes: int
    description: str
    image_size: ImageSize = CROP_SIZE


@dataclass
class Report:
    """What :func:`evaluate_folder` measured."""

    metrics: Metrics
    folders: list[str]
    targets: list[int]
    classes: list[str]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.metrics.count / max(self.seconds, 1e-9)

    def as_json(self, data: str, description: str, lowest: int) -> dict:
        per_class = self.metrics.per_class()
        rows = []
        for folder, index in zip(self.folders, self.targets):
            correct, total = per_class.get(index, (0, 0))
            rows.append({"folder": folder, "index": index, "class": self.classes[index], "images": total,
                         "correct": correct, "top1": round(100.0 * correct / total, 4) if total else None})
        return {
            "data": data, "model": description, "images": self.metrics.count, "classes": len(self.folders),
            "top1": round(self.metrics.top1, 4), "top5": round(self.metrics.top5, 4),
            "unreadable": [{"path": path, "error": message} for path, message in self.metrics.failures],
            "images_per_second": round(self.images_per_second, 2), "seconds": round(self.seconds, 3),
            "lowest": [self.classes[i] for i, *_ in self.metrics.lowest(lowest)],
            "per_class": rows,
        }


def match_folders(scan: LabelledFolder, classes: Optional[list[str]], num_classes: int) -> tuple[list[str], list[int]]:
    """The model's class names (the sorted folders for weights without names) and each folder's class index.

    Raises:
        EvaluationError: a folder matches no class; or the weights carry no names and the number of folders is not
            their number of outputs.
    """
    # Folder names are shown, and matched against the model's names, as resnet.data.names makes stored names printable.
    folders = [printable_name(folder) for folder in scan.classes]
    if classes is None:
        if len(folders) != num_classes:
            raise EvaluationError(
                f"the weights carry no class names, and DATA has {len(folders)} class folders for "
                f"{num_classes} outputs; name the folders so that their sorted order is the class order"
            )
        classes = folders  # ImageFolder's convention: output i is the i-th folder in sorted order
    return classes, match_classes(folders, classes, where=f"DATA ({str(scan.root)!r})")


def evaluate_folder(
    predictor: Predictor,
    data: str | Path | LabelledFolder,
    *,
    batch_size: int = 32,
    workers: int = 0,
    image_size: ImageSize = CROP_SIZE,
    device: torch.device = torch.device("cpu"),
    processes: Optional[distributed.Processes] = None,
    progress: bool = False,
    decode: Decode = "exact",
) -> Report:
    """Measure ``predictor`` on the labelled folder ``data`` (shared over ``processes``).

    Images are decoded exactly (``decode="exact"``, what published accuracies use), or large JPEGs at reduced
    scale (``"reduced"``, :func:`resnet.data.images.load_input`).

    Raises:
        EvaluationError: ``data`` is missing or has no class folders, a folder matches no class of the
            model, or no image could be read.
    """
    check_decode(decode)
    processes = processes or distributed.Processes(device=device)
    scan = data if isinstance(data, LabelledFolder) else scan_folder(data)
    classes, targets = match_folders(scan, predictor.classes, predictor.num_classes)
    dataset = ImageDataset([(path, targets[label]) for path, label in scan.samples], model_input_transform(image_size),
                           resize_to=data_config(image_size) if decode == "reduced" else None)
    mine = range(processes.rank, len(dataset), processes.world)
    batches = ordered_batches(dataset, mine, batch_size, workers=workers)
    metrics, seconds = measure(predictor.predict, batches, predictor.num_classes, device=device,
                               processes=processes, progress=progress, total=len(mine))
    seconds = max(processes.gather_objects(seconds))
    if metrics.count == 0:
        raise EvaluationError(f"none of the {len(dataset)} image files in DATA ({str(scan.root)!r}) could be read; "
                           f"the first: {metrics.failures[0][1] if metrics.failures else 'none found'}")
    return Report(metrics, [printable_name(folder) for folder in scan.classes], targets, classes, seconds)



"""Classify images with a model served by Triton from ``python -m resnet export --triton DIR``.

    python examples/triton_client.py --url localhost:8000 --model resnet50_onnx examples/images/*.png
    python examples/triton_client.py --model efficientnet-b0_onnx examples/images/*.png

The client first asks the server for the model's config (``GET /v2/models/<name>/config``) and prepares the
images as its ``parameters`` say: the centre crop ``image_size``, the resize ``resize_size`` before it and the
``interpolation`` (``python -m resnet export --triton`` writes them: 224 after a bilinear resize to 256 for the
ResNets, 224 / 256 bicubic for EfficientNet-B0, 380 / 412 bicubic for B4, a fine-tuned model's own size). A
repository written before the configs carried them is served a crop of its input's side S (``dims: [3, S, S]``)
after the ResNets' resize, 256/224 of S, bilinear. Images are loaded and preprocessed by the repository's own code
(resnet.data.images with the constants of resnet.data.preprocessing), so the served model gets exactly the input
the exported model was checked with.

Class names: Triton's HTTP API does not serve a model's label file, so a 1000-class model is printed with
ImageNet's names and any other with ``class N``, unless ``--labels FILE`` gives them (the model folder's
``labels.txt``, one name per line, as the export writes it for a fine-tuned model). (Triton's classification
extension, ``InferRequestedOutput(..., class_count=K)``, would return labels.txt's names with the top K raw
scores, but not the probabilities printed here.)

Run it from a checkout with the repository's requirements installed, plus ``pip install "tritonclient[http]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tritonclient.http as triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from processing_utils import get_imgnet_classes, load_image  # noqa: E402
from resnet.data.images import preprocess_at  # noqa: E402
from resnet.data.preprocessing import DEFAULT_DATA_CONFIG, DataConfig  # noqa: E402
from resnet.deploy.exporters import INPUT_NAME, OUTPUT_NAME  # noqa: E402
from resnet.deploy.triton import served_data_config  # noqa: E402


def preprocess(path: str, config: DataConfig = DEFAULT_DATA_CONFIG) -> np.ndarray:
    """(3, S, S) float32 model input: resize the shorter side to ``config.resize_size`` (``config.interpolation``),
    centre crop S = ``config.image_size``, scale to 0..1, normalise; by default the ResNets' 256 / 224 bilinear."""
    return preprocess_at(load_image(path), config).numpy()


def class_names(num_classes: int, labels: Optional[str] = None) -> Sequence[str]:
    """``labels``' lines, else ImageNet's names for a 1000-class model, else ``class 0``, ``class 1``, ..."""
    if labels is not None:
        names = Path(labels).read_text(encoding="utf-8").splitlines()
        if len(names) != num_classes:
            raise SystemExit(f"error: --labels {labels} has {len(names)} names for a {num_classes}-class model")
        return names
    if num_classes == 1000:
        return list(get_imgnet_classes())
    return [f"class {index}" for index in range(num_classes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--url", default="localhost:8000", help="Triton's HTTP endpoint (default localhost:8000)")
    parser.add_argument("--model", default="resnet50_onnx", help="model name (default resnet50_onnx)")
    parser.add_argument("-k", "--top-k", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--labels", help="class names, one per line (the model folder's labels.txt); default: "
                        "ImageNet's for 1000 classes, else 'class N'")
    args = parser.parse_args(argv)

    client = triton.InferenceServerClient(url=args.url)
    try:
        config = served_data_config(client.get_model_config(args.model))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    batch = np.stack([preprocess(path, config) for path in args.images])  # (N, 3, S, S); N <= max_batch_size
    request = triton.InferInput(INPUT_NAME, list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    result = client.infer(args.model, [request], outputs=[triton.InferRequestedOutput(OUTPUT_NAME)])
    logits = result.as_numpy(OUTPUT_NAME)  # (N, classes) raw scores

    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = class_names(logits.shape[1], args.labels)
    for path, row in zip(args.images, probabilities):
        print(path)
        for index in np.argsort(-row)[: args.top_k]:
            print(f"  {100 * row[index]:5.1f}%  {index:4d}  {names[index]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

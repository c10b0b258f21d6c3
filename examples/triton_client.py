"""Classify images with a model served by Triton from ``python -m resnet export --triton DIR``.

    python examples/triton_client.py --url localhost:8000 --model resnet50_onnx examples/images/*.png

Preprocessing uses the repository's constants (resnet.preprocessing) in plain numpy + PIL; it gives
the same tensor as the torchvision pipeline the model was checked with. Needs ``pip install
tritonclient[http]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from processing_utils import get_imgnet_classes  # noqa: E402
from resnet.export import INPUT_NAME, OUTPUT_NAME  # noqa: E402
from resnet.preprocessing import CROP_SIZE, MEAN, RESIZE_SIZE, STD  # noqa: E402


def preprocess(path: str) -> np.ndarray:
    """(3, 224, 224) float32: shorter side to RESIZE_SIZE (bilinear), centre crop, scale to 0..1, normalise."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    width, height = image.size  # torchvision's Resize(int) arithmetic, so the pixels match exactly
    if width <= height:
        size = (RESIZE_SIZE, int(RESIZE_SIZE * height / width))
    else:
        size = (int(RESIZE_SIZE * width / height), RESIZE_SIZE)
    image = image.resize(size, Image.BILINEAR)
    left, top = (int(round((side - CROP_SIZE) / 2.0)) for side in size)
    image = image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--url", default="localhost:8000", help="Triton's HTTP endpoint (default localhost:8000)")
    parser.add_argument("--model", default="resnet50_onnx", help="model name (default resnet50_onnx)")
    parser.add_argument("-k", "--top-k", type=int, default=5, help="classes to print per image (default 5)")
    args = parser.parse_args(argv)

    batch = np.stack([preprocess(path) for path in args.images])  # (N, 3, 224, 224); N <= max_batch_size
    request = triton.InferInput(INPUT_NAME, list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    client = triton.InferenceServerClient(url=args.url)
    result = client.infer(args.model, [request], outputs=[triton.InferRequestedOutput(OUTPUT_NAME)])
    logits = result.as_numpy(OUTPUT_NAME)  # (N, 1000) raw scores

    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    classes = get_imgnet_classes()
    for path, row in zip(args.images, probabilities):
        print(path)
        for index in np.argsort(-row)[: args.top_k]:
            print(f"  {100 * row[index]:5.1f}%  {index:4d}  {classes[index]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

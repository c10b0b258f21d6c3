"""Classify images with a model served by Triton from ``python -m resnet export --triton DIR``.

    python examples/triton_client.py --url localhost:8000 --model resnet50_onnx examples/images/*.png

Images are loaded and preprocessed by the repository's own code (processing_utils, with the
constants of resnet.data.preprocessing), so the client feeds the served model exactly what the model was
checked with. Run it from a checkout with the repository's requirements installed, plus
``pip install "tritonclient[http]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from processing_utils import get_imgnet_classes, load_image, preprocess as to_model_input  # noqa: E402
from resnet.deploy.exporters import INPUT_NAME, OUTPUT_NAME  # noqa: E402


def preprocess(path: str) -> np.ndarray:
    """(3, 224, 224) float32 model input: resize 256, centre crop 224, scale to 0..1, normalise."""
    return to_model_input(load_image(path)).numpy()


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

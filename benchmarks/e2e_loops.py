"""The two hand-written pipelines of benchmark.py's end-to-end section, each run there in a fresh process.

    python benchmarks/e2e_loops.py per-image FOLDER --runtime torch-fp32
    python benchmarks/e2e_loops.py dataloader FOLDER --runtime openvino --onnx resnet50-int8.onnx

``per-image``: the documented loop: ``prepare_input_from_uri`` of the hub's processing utils and one forward
per image, softmax and ``pick_n_best`` (exact decoding, batch 1). ``dataloader``: what timm's inference
script does: a ``torch.utils.data.DataLoader`` with worker processes (timm's default 2) over a dataset that
opens each file with PIL and converts it to RGB, torchvision's eval transforms (resize 256, bilinear, centre
crop 224, normalise), batches of 32, top-5 of each batch collected.

Both run the model object the command line runs for the same runtime: the hub model through
``resnet.fast.optimize_for_inference`` (``torch-fp32``, ``torch-bf16``), or the ONNX file on ONNX Runtime or
OpenVINO through ``resnet.deploy.runtimes.load_onnx_model``. The weights come from TORCH_HOME's cache, which
the benchmark seeds with the stand-in checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNTIMES = ("torch-fp32", "torch-bf16", "onnxruntime", "openvino")


def runtime_model(runtime: str, onnx: str | None):
    """The model object ``python -m resnet classify`` runs for ``runtime``."""
    import torch

    if runtime.startswith("torch"):
        from resnet.fast import optimize_for_inference

        model = torch.hub.load(str(REPO), "nvidia_resnet50", pretrained=True, source="local").eval()
        return optimize_for_inference(model, dtype="bfloat16" if runtime == "torch-bf16" else "float32")
    from resnet.deploy.runtimes import load_onnx_model

    if not onnx:
        raise SystemExit(f"--runtime {runtime} needs --onnx FILE")
    return load_onnx_model(onnx, runtime)


def per_image(uris: list[str], model) -> None:
    import torch

    utils = torch.hub.load(str(REPO), "nvidia_convnets_processing_utils", source="local")
    for uri in uris:
        batch = utils.prepare_input_from_uri(uri)
        with torch.no_grad():
            output = torch.nn.functional.softmax(model(batch), dim=1)
        utils.pick_n_best(predictions=output, n=5)


def dataloader(uris: list[str], model, batch_size: int, workers: int) -> None:
    import torch
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(uris)

        def __getitem__(self, index: int):
            with Image.open(uris[index]) as image:
                return transform(image.convert("RGB")), 0

    loader = torch.utils.data.DataLoader(Files(), batch_size=batch_size, shuffle=False, num_workers=workers)
    top = []
    with torch.no_grad():
        for images, _ in loader:
            top.append(model(images).topk(5).indices)
    print(f"{sum(len(t) for t in top)} images classified")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("per-image", "dataloader"))
    parser.add_argument("folder")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch-fp32")
    parser.add_argument("--onnx", help="the ONNX file, for --runtime onnxruntime or openvino")
    parser.add_argument("--batch-size", type=int, default=32, help="with dataloader (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="with dataloader: worker processes (default 2)")
    args = parser.parse_args(argv)
    uris = [str(p) for p in sorted(Path(args.folder).iterdir()) if p.is_file()]
    model = runtime_model(args.runtime, args.onnx)
    if args.mode == "per-image":
        per_image(uris, model)
    else:
        dataloader(uris, model, args.batch_size, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

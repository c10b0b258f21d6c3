"""Speed of this repository's EfficientNet-B0 (and B4) against torchvision's, side by side in one process.

    python benchmarks/efficientnet.py               # CPU, B0 at 224, batches 1 and 16 (a few minutes on 2 cores)
    python benchmarks/efficientnet.py --b4          # also B4 at 380
    python benchmarks/efficientnet.py --onnx        # also ONNX Runtime (fp32) on the exported file
    python benchmarks/efficientnet.py --device cuda

The peer is torchvision's ``efficientnet_b0`` (the same network as NVIDIA's original B0; BatchNorm eps set to
NVIDIA's 1e-3) holding the same stand-in weights, eval mode, NCHW float32: the baseline of every ratio. Rows:
our model as the hub returns it (eval + no_grad: it always runs its own modules, the ResNets' fused eval path
does not apply to it), and ``optimize_for_inference`` (what ``classify`` / ``evaluate`` run: BatchNorm folded
into the convolutions, channels-last). Figures are medians of interleaved repeats (``benchmark.py``'s harness);
the agreement column is the largest logit difference to the baseline and the top-1 / top-5 agreement.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import Variant, agreement, interleaved, print_table  # noqa: E402
from standin import standin_checkpoint  # noqa: E402

from resnet.fast import optimize_for_inference  # noqa: E402
from resnet.models.efficientnet_builder import efficientnet_from_checkpoint  # noqa: E402


def torchvision_peer(arch: str, state: dict) -> torch.nn.Module:
    """torchvision's EfficientNet of ``arch`` (original SE only) with ``state`` mapped by entry order."""
    import torchvision

    peer = getattr(torchvision.models, arch.replace("-", "_"))()
    for module in peer.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps, module.momentum = 1e-3, 0.01
    theirs = peer.state_dict()
    peer.load_state_dict({name: value.reshape(their.shape)
                          for value, (name, their) in zip(state.values(), theirs.items(), strict=True)})
    return peer.eval()


def onnx_model(model: torch.nn.Module, size: int, folder: Path):
    from resnet.deploy.exporters import export_onnx, prepare_for_export
    from resnet.deploy.runtimes import load_onnx_model

    path = folder / "model.onnx"
    export_onnx(prepare_for_export(model, image_size=size), path)
    return load_onnx_model(path, "onnxruntime")


def section(arch: str, size: int, batches: list[int], repeats: int, device: torch.device, with_onnx: bool) -> None:
    state = standin_checkpoint(arch)
    ours = efficientnet_from_checkpoint(arch, state).eval().to(device)
    models = [
        (f"(a) torchvision {arch.replace('-', '_')}, NCHW fp32 [baseline]", torchvision_peer(arch, state).to(device)),
        ("(b) ours, as the hub returns it (eval + no_grad)", ours),
        ("(c) ours, optimize_for_inference fp32 (folded BN, channels-last)",
         optimize_for_inference(ours, device=device, dtype="float32")),
    ]
    if device.type == "cuda":
        models.append(("(d) ours, optimize_for_inference auto (fp16)",
                       optimize_for_inference(ours, device=device, dtype="auto")))
    folder = tempfile.TemporaryDirectory()
    if with_onnx and device.type == "cpu":
        models.append(("(e) ONNX Runtime fp32 (export of ours)", onnx_model(ours, size, Path(folder.name))))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        outputs: dict[str, torch.Tensor] = {}
        variants = []
        for name, model in models:
            def call(model=model, name=name):
                with torch.no_grad():
                    outputs[name] = model(x)

            variants.append(Variant(name, call))
        interleaved(variants, repeats, sync=sync)
        base = variants[0]
        rows = [[v.name, f"{batch / v.median:.1f}", f"{base.median / v.median:.2f}x", f"{v.median * 1000:.1f}",
                 agreement(outputs[v.name], outputs[base.name]), str(len(v.times))] for v in variants]
        print_table(f"{arch} at {size}x{size}, batch {batch}, {device} ({torch.get_num_threads()} threads)",
                    ["variant", "img/s", "vs (a)", "ms/batch", "max|diff| top1 top5", "n"], rows)
    folder.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--b4", action="store_true", help="also EfficientNet-B4 at 380")
    parser.add_argument("--onnx", action="store_true", help="also ONNX Runtime on the fp32 export")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}")
    section("efficientnet-b0", 224, [1, 16] if device.type == "cpu" else [1, 64, 256], args.repeats, device,
            args.onnx)
    if args.b4:
        section("efficientnet-b4", 380, [1, 4] if device.type == "cpu" else [1, 32, 128], args.repeats, device,
                args.onnx)


if __name__ == "__main__":
    main()

"""EfficientNet: NVIDIA's architecture, its checkpoint layouts, and parity with NVIDIA's own outputs.

Expected logits come from the live fixtures (tests/fixtures/ngc/README.md), computed with NVIDIA's code;
parameter counts and published facts from NVIDIA's code and READMEs; the shapes of the archs without a
fixture from torchvision's EfficientNet, an independent implementation of the same scaling rules.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import pytest
import torch
from support import load_live, load_schema, parity_input
from torch import nn

from resnet.weights.catalogue import Checkpoint
from resnet.models.efficientnet import (
    EFFICIENTNET_ARCHS,
    EfficientNet,
    EfficientNetArch,
    MBConvBlock,
    SqueezeExcitationGate,
    StochasticDepthAdd,
    canonical_efficientnet_arch,
    get_efficientnet_arch,
    scale_channels,
    scale_repeats,
)
from resnet.models.efficientnet_builder import (
    create_efficientnet,
    efficientnet_from_checkpoint,
    efficientnet_stage_names,
    ngc_checkpoint,
)
from resnet.weights.reading import CheckpointMismatchError, WeightsError

FIXTURE_ARCHS = ("efficientnet-b0", "efficientnet-widese-b0", "efficientnet-b4", "efficientnet-widese-b4")
B4_ARCHS = ("efficientnet-b4", "efficientnet-widese-b4")
UNPUBLISHED = tuple(f"efficientnet-{w}b{i}" for w in ("", "widese-") for i in (1, 2, 3, 5, 6, 7))

# NVIDIA's facts (the spec: effnet.py, READMEs, counts from running NVIDIA's code).
NUM_PARAMS = {"efficientnet-b0": 5_288_548, "efficientnet-b4": 19_341_616, "efficientnet-widese-b0": 8_423_848,
              "efficientnet-widese-b4": 34_927_246, "efficientnet-b1": 7_794_184}
NGC = "https://api.ngc.nvidia.com/v2/models/nvidia"
URLS = {
    "efficientnet-b0": f"{NGC}/efficientnet_b0_pyt_amp/versions/20.12.0/files/nvidia_efficientnet-b0_210412.pth",
    "efficientnet-b4": f"{NGC}/efficientnet_b4_pyt_amp/versions/20.12.0/files/nvidia_efficientnet-b4_210412.pth",
    "efficientnet-widese-b0":
        f"{NGC}/efficientnet_widese_b0_pyt_amp/versions/20.12.0/files/nvidia_efficientnet-widese-b0_210412.pth",
    "efficientnet-widese-b4":
        f"{NGC}/efficientnet_widese_b4_pyt_amp/versions/20.12.0/files/nvidia_efficientnet-widese-b4_210412.pth",
}
TOP1_TOP5 = {"efficientnet-b0": (77.63, 93.82), "efficientnet-b4": (82.98, 96.44),
             "efficientnet-widese-b0": (77.89, 94.00), "efficientnet-widese-b4": (83.28, 96.45)}


def _ngc_to_layers(name: str) -> str:
    """NVIDIA's ``ngc_checkpoint_remap`` as the tests' own expectation: ``layerN.`` -> ``layers.{N-1}.``."""
    head, _, rest = name.partition(".")
    return f"layers.{int(head[5:]) - 1}.{rest}" if head.startswith("layer") else name


def _se_4d(state: dict) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.reshape(*v.shape, 1, 1) if ".se." in k and v.dim() == 2 else v) for k, v in state.items())


#: The checkpoint layouts users hold, each made from the NGC-layout stand-in.
LAYOUTS = {
    "module-prefix": lambda sd: OrderedDict(("module." + k, v) for k, v in sd.items()),
    "se-4d": _se_4d,
    "layers-naming": lambda sd: OrderedDict((_ngc_to_layers(k), v) for k, v in sd.items()),
    "training-checkpoint": lambda sd: {"epoch": 3, "best_prec1": 1.5, "state_dict": OrderedDict(
        ("module." + _ngc_to_layers(k), v) for k, v in sd.items()), "state_dict_ema": None, "optimizer": {}},
    "all-at-once": lambda sd: {"state_dict": _se_4d(OrderedDict(("module." + _ngc_to_layers(k), v)
                                                             for k, v in sd.items()))},
}


@pytest.fixture(scope="module")
def ngc_model(live_standin, tmp_path_factory):
    """``ngc_model(arch)``: ``arch`` loaded from the NGC-layout file through ``pretrained_from_file``, eval mode."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("effnet")

    def get(arch: str) -> EfficientNet:
        if arch not in cache:
            path = root / f"nvidia_{arch}_210412.pth"
            torch.save(live_standin(arch), path)
            cache[arch] = create_efficientnet(arch, pretrained_from_file=path).eval()
            path.unlink()
        return cache[arch]

    return get


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# --------------------------------------------------------------------------- parity with NVIDIA's model


@pytest.mark.parametrize("arch", FIXTURE_ARCHS)
@pytest.mark.slow
def test_live_parity_at_224_through_the_ngc_file(arch, ngc_model):
    model = ngc_model(arch)
    assert _max_diff(_logits(model, parity_input(arch, live=True)), load_live(arch)["logits"]) <= 1e-4


@pytest.mark.parametrize("arch", B4_ARCHS)
@pytest.mark.slow
def test_live_parity_at_380_for_b4(arch, ngc_model):
    live = load_live(arch)
    assert live["image_size_380"] == get_efficientnet_arch(arch).image_size == 380
    logits = _logits(ngc_model(arch), parity_input(arch, 380, live=True))
    assert _max_diff(logits, live["logits_380"]) <= 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", FIXTURE_ARCHS)
@pytest.mark.slow
def test_every_checkpoint_layout_loads_the_same_weights(arch, layout, live_standin, ngc_model):
    """Each layout gives exactly the weights of the NGC file, whose logits match NVIDIA's (above)."""
    model = efficientnet_from_checkpoint(arch, LAYOUTS[layout](live_standin(arch)), f"{layout} checkpoint").eval()
    reference = ngc_model(arch).state_dict()
    loaded = model.state_dict()
    assert list(loaded) == list(reference)
    for key, value in loaded.items():
        assert value.shape == reference[key].shape and torch.equal(value, reference[key]), key


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.slow
def test_every_checkpoint_layout_matches_nvidia_logits_from_a_file(layout, live_standin, tmp_path):
    arch = "efficientnet-b0"
    path = tmp_path / "checkpoint.pth"
    torch.save(LAYOUTS[layout](live_standin(arch)), path)
    model = create_efficientnet(arch, pretrained_from_file=path).eval()
    assert _max_diff(_logits(model, parity_input(arch, live=True)), load_live(arch)["logits"]) <= 1e-4


@pytest.mark.parametrize("arch", ["efficientnet-b0", "efficientnet-widese-b0"])
@pytest.mark.parametrize("se_4d", [False, True])
@pytest.mark.slow
def test_conv_form_squeeze_excitation_matches_nvidia(arch, se_4d, live_standin):
    """``trt=True`` (1x1-conv SE, 4-D weights) takes 2-D or 4-D SE weights and computes the same."""
    state = live_standin(arch)
    model = efficientnet_from_checkpoint(arch, _se_4d(state) if se_4d else state, trt=True).eval()
    assert model.layers[1].block0.se.squeeze.weight.dim() == 4
    assert _max_diff(_logits(model, parity_input(arch, live=True)), load_live(arch)["logits"]) <= 1e-4


@pytest.mark.slow
def test_onnx_silu_activation_matches_nvidia(live_standin):
    arch = "efficientnet-b0"
    model = efficientnet_from_checkpoint(arch, live_standin(arch), activation="onnx-silu").eval()
    assert not any(isinstance(m, nn.SiLU) for m in model.modules())
    assert _max_diff(_logits(model, parity_input(arch, live=True)), load_live(arch)["logits"]) <= 1e-4


@pytest.mark.parametrize("change", [dict(bn_epsilon=1e-5), dict(activation="relu")])
@pytest.mark.slow
def test_the_fixture_tells_a_changed_model_apart(change, live_standin):
    """The parameters take effect, and the live fixture sees BatchNorm eps 1e-5 (a mistake the plain recipe's
    logits miss)."""
    arch = "efficientnet-b0"
    model = efficientnet_from_checkpoint(arch, live_standin(arch), **change).eval()
    assert _max_diff(_logits(model, parity_input(arch, live=True)), load_live(arch)["logits"]) > 1e-2


@pytest.mark.slow
def test_half_precision_checkpoint_loads_as_float32(live_standin):
    """NVIDIA's ``_pyt_amp`` files may hold float16 tensors: they become the model's float32."""
    arch = "efficientnet-b0"
    half = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in live_standin(arch).items())
    model = efficientnet_from_checkpoint(arch, half).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.stem.conv.weight, half["stem.conv.weight"].float())


# --------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("arch", FIXTURE_ARCHS)
def test_state_dict_is_nvidias_in_names_shapes_and_order(arch):
    """The model's entries are the NGC file's (360 for the B0s, 706 for the B4s) in NVIDIA's current naming."""
    with torch.device("meta"):
        model = EfficientNet(arch)
    expected = [(_ngc_to_layers(name), tuple(shape)) for name, shape in load_schema(arch)["keys"]]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert len(expected) == (706 if "b4" in arch else 360)


@pytest.mark.parametrize("arch", sorted(NUM_PARAMS))
def test_parameter_count_is_nvidias(arch):
    with torch.device("meta"):
        model = EfficientNet(arch)
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS[arch] == get_efficientnet_arch(arch).num_params


@pytest.mark.parametrize("arch", [a for a in EFFICIENTNET_ARCHS if get_efficientnet_arch(a).num_params])
def test_stated_parameter_counts_are_the_models(arch):
    with torch.device("meta"):
        model = EfficientNet(arch)
    assert sum(p.numel() for p in model.parameters()) == get_efficientnet_arch(arch).num_params


@pytest.mark.parametrize("size", ["b2", "b3", "b5", "b7"])
@pytest.mark.slow
def test_unpublished_sizes_have_torchvisions_shapes(size):
    """torchvision scales B0 by the same rules (channels to multiples of 8, never 10% down; ceil depth) and has
    the same layer order; its SE convolutions hold 4-D weights where the original SE here is Linear."""
    import torchvision

    with torch.device("meta"):
        ours = EfficientNet(f"efficientnet-{size}")
        peer = getattr(torchvision.models, f"efficientnet_{size}")()
    peer_shapes = [tuple(p.shape[:2]) if ".fc" in n and p.dim() == 4 else tuple(p.shape)
                   for n, p in peer.named_parameters()]
    assert [tuple(p.shape) for p in ours.parameters()] == peer_shapes


def test_scaling_rules():
    assert [scale_channels(c, 1.4) for c in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == [
        48, 24, 32, 56, 112, 160, 272, 448, 1792]
    assert [scale_repeats(r, 1.8) for r in (1, 2, 2, 3, 3, 4, 1)] == [2, 4, 4, 6, 6, 8, 2]
    assert scale_channels(16, 0.1) == 8  # never below the divisor
    assert scale_channels(104, 0.5) == 56  # 52 rounds down to 48, more than 10% below: one divisor more
    b4 = get_efficientnet_arch("efficientnet-b4")
    assert (b4.stem_channels, b4.feature_channels, b4.num_blocks) == (48, 1792, 32)
    assert get_efficientnet_arch("efficientnet-b0").num_blocks == 16


@pytest.mark.parametrize("arch", ["efficientnet-b0", "efficientnet-b4"])
@pytest.mark.slow
def test_batchnorm_eps_and_momentum_are_nvidias(arch):
    with torch.device("meta"):
        model = EfficientNet(arch)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (96 if "b4" in arch else 49)
    assert all(m.eps == 1e-3 and m.momentum == 1 - 0.99 for m in norms)
    with torch.device("meta"):
        changed = EfficientNet(arch, bn_epsilon=1e-5, bn_momentum=0.1)
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in changed.modules() if isinstance(m, nn.BatchNorm2d))


def test_blocks_stride_padding_and_squeeze_excitation():
    with torch.device("meta"):
        model = EfficientNet("efficientnet-b0")
    first = model.layers[0].block0
    assert first.expand is None and first.residual is None  # expansion 1; 32 -> 16 channels
    block = model.layers[2].block0  # 5x5, stride 2
    assert block.expand.conv.stride == (1, 1) and block.depsep.conv.stride == (2, 2)
    assert block.depsep.conv.padding == (2, 2) and block.depsep.conv.groups == block.depsep.conv.in_channels
    assert model.stem.conv.stride == (2, 2) and model.stem.conv.padding == (1, 1)
    assert not any(c.bias is not None for n, c in model.named_modules() if isinstance(c, nn.Conv2d))
    assert [type(m).__name__ for m in block.proj] == ["Conv2d", "BatchNorm2d"]  # no activation after projection
    assert isinstance(block.se, SqueezeExcitationGate)
    assert isinstance(block.se.activation, nn.SiLU)  # the network's activation, not ReLU
    assert isinstance(model.layers[2].block1.residual, StochasticDepthAdd)
    relu = EfficientNet("efficientnet-b0", activation="relu")
    assert isinstance(relu.layers[2].block0.se.activation, nn.ReLU)


def test_classifier_is_pool_dropout_fc():
    with torch.device("meta"):
        b0, b4 = EfficientNet("efficientnet-b0"), EfficientNet("efficientnet-b4", dropout=0.1, num_classes=10)
    assert [type(m).__name__ for m in b0.classifier] == ["AdaptiveAvgPool2d", "Flatten", "Dropout", "Linear"]
    assert b0.classifier.dropout.p == 0.2 and b4.classifier.dropout.p == 0.1
    assert b4.classifier.fc.out_features == 10 and b4.num_classes == 10
    assert EFFICIENTNET_ARCHS["efficientnet-b4"].dropout == 0.4


@pytest.mark.parametrize("conv_init", ["fan_in", "fan_out"])
@pytest.mark.slow
def test_initialisation_is_nvidias(conv_init):
    torch.manual_seed(0)
    model = EfficientNet("efficientnet-b0", conv_init=conv_init)
    conv = model.features.conv  # 320 -> 1280, 1x1
    fan = 320 if conv_init == "fan_in" else 1280
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.03)
    bn = model.layers[3].block1.depsep.bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    squeeze = model.layers[5].block2.se.squeeze  # Linear(1152, 48): PyTorch's default, uniform +-1/sqrt(1152)
    bound = 1 / math.sqrt(squeeze.in_features)
    assert squeeze.weight.abs().max().item() <= bound
    assert squeeze.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    conv_form = EfficientNet("efficientnet-b0", trt=True).layers[5].block2.se.squeeze  # 1x1 conv: the same default
    assert conv_form.weight.abs().max().item() <= bound and conv_form.bias.abs().min().item() > 0
    assert conv_form.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_data_config_and_ngc_facts():
    for arch in ("efficientnet-b0", "efficientnet-widese-b0"):
        config = get_efficientnet_arch(arch)
        assert (config.image_size, config.resize_size, config.interpolation) == (224, 256, "bicubic")
    for arch in B4_ARCHS:
        config = get_efficientnet_arch(arch)
        assert (config.image_size, config.resize_size, config.interpolation) == (380, 412, "bicubic")
    for arch, url in URLS.items():
        checkpoint = ngc_checkpoint(arch)
        assert isinstance(checkpoint, Checkpoint) and checkpoint.arch == arch
        assert checkpoint.url == url and checkpoint.file_name == url.rsplit("/", 1)[1]
        assert (checkpoint.top1, checkpoint.top5) == TOP1_TOP5[arch] and checkpoint.sha256 is None
        assert "not re-measured" in checkpoint.accuracy_note
    assert [get_efficientnet_arch(f"efficientnet-b{i}").image_size for i in range(8)] == [
        224, 240, 260, 300, 380, 456, 528, 600]


# --------------------------------------------------------------------------- archs without NVIDIA's weights


@pytest.mark.parametrize("arch", UNPUBLISHED)
@pytest.mark.slow
def test_unpublished_archs_build_without_weights(arch):
    with pytest.raises(WeightsError, match=f"no pretrained weights for {arch} .*pretrained=False"):
        ngc_checkpoint(arch)
    config = get_efficientnet_arch(arch)
    with torch.device("meta"):  # shapes only (a forward pass: test_a_random_b1_runs; widths: torchvision's)
        model = EfficientNet(arch)
    assert sum(1 for m in model.modules() if isinstance(m, MBConvBlock)) == config.num_blocks
    assert model.classifier.fc.in_features == model.features.conv.out_channels == config.feature_channels


@pytest.mark.slow
def test_a_random_b1_runs():
    model = create_efficientnet("efficientnet-b1", num_classes=5).eval()
    assert sum(p.numel() for p in model.parameters()) == 7_794_184 - 995 * 1281
    assert _logits(model, torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert model.classes is None
    assert create_efficientnet("efficientnet-b0").classes[0] == "tench, Tinca tinca"


# --------------------------------------------------------------------------- names and keyword arguments


def test_arch_spellings():
    assert canonical_efficientnet_arch("EfficientNet_WideSE_B4") == "efficientnet-widese-b4"
    assert canonical_efficientnet_arch("efficient-b0") == "efficientnet-b0"  # NVIDIA's misspelt hub default
    with pytest.raises(ValueError, match="pytorch_quantization.*'efficientnet-b4'.*export --int8"):
        canonical_efficientnet_arch("efficientnet-quant-b4")
    with pytest.raises(ValueError, match="unknown EfficientNet architecture 'efficientnet-b8'.*efficientnet-b0, "):
        get_efficientnet_arch("efficientnet-b8")


def test_unknown_keyword_lists_the_accepted_ones():
    with pytest.raises(TypeError, match="'droput'.*accepted ones are dropout, num_classes, activation, conv_init, "
                                        "bn_momentum, bn_epsilon, survival_prob, trt"):
        create_efficientnet("efficientnet-b0", droput=0.3)
    with pytest.raises(ValueError, match="quantized=True.*pytorch_quantization.*export --int8"):
        create_efficientnet("efficientnet-b0", quantized=True)
    assert create_efficientnet("efficientnet-b0", quantized=False, dropout=0.3).classifier.dropout.p == 0.3


@pytest.mark.parametrize("bad, message", [
    (dict(dropout=1.0), "dropout must be a probability in \\[0, 1\\), not 1.0"),
    (dict(survival_prob=0), "survival_prob must be a probability in \\(0, 1\\], not 0"),
    (dict(activation="gelu"), "activation must be one of 'silu', 'relu', 'onnx-silu', not 'gelu'"),
    (dict(conv_init="normal"), "conv_init must be 'fan_in' or 'fan_out'"),
    (dict(bn_epsilon=0.0), "bn_epsilon must be a positive number"),
    (dict(bn_momentum=2.0), "bn_momentum must be in \\[0, 1\\]"),
    (dict(num_classes=0), "num_classes must be a positive integer"),
])
def test_bad_values_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        EfficientNet("efficientnet-b0", **bad)


# --------------------------------------------------------------------------- stochastic depth


def test_stochastic_depth_survival_probabilities_are_nvidias():
    with torch.device("meta"):
        b4, b0 = EfficientNet("efficientnet-b4"), EfficientNet("efficientnet-b0")
    blocks = [m for m in b4.modules() if isinstance(m, MBConvBlock)]
    probs = {i: b.residual.survival_prob for i, b in enumerate(blocks) if b.residual is not None}
    assert probs == {i: pytest.approx(1 - 0.2 * i / 32) for i in probs}
    assert min(probs.values()) == pytest.approx(0.80625) and max(probs.values()) == pytest.approx(0.99375)
    assert len(probs) == 32 - 7  # the first block of every stage changes channels
    assert {m.survival_prob for m in b0.modules() if isinstance(m, StochasticDepthAdd)} == {1.0}


def test_stochastic_depth_drops_the_branch_for_the_whole_batch():
    add = StochasticDepthAdd(0.6).train()
    shortcut, branch = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    torch.manual_seed(0)
    kept = 0
    for _ in range(1000):
        out = add(shortcut, branch)
        if torch.equal(out, shortcut):
            continue
        assert torch.allclose(out, shortcut + branch / 0.6, atol=1e-6)  # kept for every sample, scaled by 1/p
        kept += 1
    assert 0.55 < kept / 1000 < 0.65
    add.eval()
    assert torch.equal(add(shortcut, branch), shortcut + branch)
    assert torch.equal(StochasticDepthAdd(1.0).train()(shortcut, branch), shortcut + branch)


@pytest.mark.slow
def test_model_trains_with_stochastic_depth():
    """A small member of the family in training mode: each residual block keeps or drops its branch for the
    whole batch, and gradients flow (in-place activations included)."""
    tiny = EfficientNetArch("tiny", "tiny", width=0.25, depth=0.5, image_size=32, dropout=0.2, survival_prob=0.5)
    torch.manual_seed(1)
    model = EfficientNet(tiny, num_classes=3).train()
    seen = []

    def record(module, inputs, output):
        shortcut, branch = inputs
        seen.append(torch.equal(output, shortcut)
                    or torch.allclose(output, shortcut + branch / module.survival_prob, atol=1e-5))

    for module in model.modules():
        if isinstance(module, StochasticDepthAdd) and module.survival_prob < 1:
            module.register_forward_hook(record)
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    assert seen and all(seen)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------- a plain module


@pytest.mark.slow
def test_extract_features(ngc_model):
    model = ngc_model("efficientnet-b0")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        found = model.extract_features(x)
        assert list(found) == [f"layer{i}" for i in range(1, 8)] + ["features", "classifier"]
        assert [found[f"layer{i}"].shape[-1] for i in range(1, 8)] == [32, 16, 8, 4, 4, 2, 2]
        assert found["features"].shape == (2, 1280, 2, 2)
        assert torch.equal(found["classifier"], model(x))
        calls = []
        handle = model.layers[2].register_forward_hook(lambda *args: calls.append(1))
        try:
            only = model.extract_features(x, ["layer2"])
        finally:
            handle.remove()
        assert list(only) == ["layer2"] and not calls  # stops after the last stage asked for
        assert torch.equal(only["layer2"], found["layer2"])
    with pytest.raises(ValueError, match="unknown feature name.*'layer8'"):
        model.extract_features(x, ["layer8"])


@pytest.mark.slow
def test_model_is_a_plain_module(ngc_model):
    model = ngc_model("efficientnet-b0")
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(p.requires_grad and p.is_contiguous() for p in model.parameters())
    x = torch.randn(2, 3, 64, 64)
    calls = []
    handle = model.layers[3].block1.se.register_forward_hook(lambda *args: calls.append(1))
    try:
        before = _logits(model, x)
    finally:
        handle.remove()
    assert calls == [1]
    bias = model.classifier.fc.bias
    with torch.no_grad():
        bias += 1.0
    try:
        assert torch.allclose(_logits(model, x), before + 1.0, atol=1e-5)  # a user's change takes effect
    finally:
        with torch.no_grad():
            bias -= 1.0


@pytest.mark.slow
def test_script_trace_and_onnx_export(ngc_model, tmp_path):
    import onnxruntime

    model = ngc_model("efficientnet-b0")
    x = torch.randn(2, 3, 64, 64)
    expected = _logits(model, x)
    # The executor's optimisation passes cost seconds and are not what is tested here.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        assert _max_diff(torch.jit.script(model)(x), expected) <= 1e-5
        assert _max_diff(torch.jit.trace(model, x, check_trace=False)(x), expected) <= 1e-5
    path = tmp_path / "b0.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    assert _max_diff(torch.from_numpy(out), expected) <= 1e-4


# --------------------------------------------------------------------------- loading errors


def test_stage_names():
    assert efficientnet_stage_names("layer1.block0.se.squeeze.weight") == "layers.0.block0.se.squeeze.weight"
    assert efficientnet_stage_names("layer7.block1.proj.bn.bias") == "layers.6.block1.proj.bn.bias"
    for unchanged in ("layers.3.block0.depsep.conv.weight", "stem.conv.weight", "classifier.fc.bias", "layer0.x"):
        assert efficientnet_stage_names(unchanged) == unchanged


@pytest.mark.slow
def test_file_of_another_arch_is_named(live_standin, tmp_path):
    path = tmp_path / "b0.pth"
    torch.save(live_standin("efficientnet-b0"), path)
    with pytest.raises(CheckpointMismatchError) as caught:
        create_efficientnet("efficientnet-widese-b0", pretrained_from_file=path)
    text = str(caught.value)
    assert repr(str(path)) in text and "efficientnet-widese-b0 (num_classes=1000)" in text
    assert "45 wrongly shaped" in text and "wrong shape: layers.1.block0.se.squeeze.weight" in text
    assert "It is an efficientnet-b0 checkpoint" in text


def test_resnet_weights_are_refused_with_what_does_not_match():
    resnet = {name: torch.zeros(shape) for name, shape in load_schema("resnet50")["keys"][:30]}
    with pytest.raises(CheckpointMismatchError, match=r"(?s)resnet weights does not fit efficientnet-b0.*"
                       r"missing: stem\.conv\.weight.*unexpected: conv1\.weight.*"
                       r"Check that the file was saved from an EfficientNet"):
        efficientnet_from_checkpoint("efficientnet-b0", resnet, "resnet weights")


def test_missing_file_and_missing_ema(live_standin, tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained_from_file"):
        create_efficientnet("efficientnet-b0", pretrained_from_file=tmp_path / "absent.pth")
    with pytest.raises(CheckpointMismatchError, match="no EMA weights.*'state_dict_ema'.*ema=False"):
        efficientnet_from_checkpoint("efficientnet-b0", {"state_dict": live_standin("efficientnet-b0")}, ema=True)


@pytest.mark.slow
def test_ema_weights_of_a_training_checkpoint(live_standin, ngc_model):
    arch = "efficientnet-b0"
    plain = OrderedDict((k, v * 0.5 if v.is_floating_point() else v) for k, v in live_standin(arch).items())
    checkpoint = {"state_dict": plain, "state_dict_ema": live_standin(arch), "epoch": 10}
    ema = efficientnet_from_checkpoint(arch, checkpoint, ema=True)
    assert torch.equal(ema.stem.conv.weight, ngc_model(arch).stem.conv.weight)
    assert torch.equal(efficientnet_from_checkpoint(arch, checkpoint).stem.conv.weight, plain["stem.conv.weight"])


@pytest.mark.slow
def test_head_replacement_and_class_names(live_standin, ngc_model):
    arch = "efficientnet-b0"
    with pytest.warns(UserWarning, match="1000-class head but num_classes=10.*freshly initialised"):
        model = efficientnet_from_checkpoint(arch, live_standin(arch), num_classes=10)
    assert model.classifier.fc.out_features == 10 and not model.classifier.fc.weight.is_meta
    assert model.classes is None
    assert torch.equal(model.features.conv.weight, ngc_model(arch).features.conv.weight)
    names = [f"class {i}" for i in range(10)]
    saved = {"state_dict": {**model.state_dict()}, "classes": names}
    again = efficientnet_from_checkpoint(arch, saved)  # num_classes from the file, its class names kept
    assert again.num_classes == 10 and again.classes == names
    with pytest.raises(CheckpointMismatchError, match="10-class head: pass num_classes=10"):
        efficientnet_from_checkpoint(arch, saved, num_classes=1000)
    assert ngc_model(arch).classes[0] == "tench, Tinca tinca"

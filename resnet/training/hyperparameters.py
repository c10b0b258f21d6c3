"""The numbers of NVIDIA's training recipe (:mod:`resnet.training.recipe` uses them), without torch: the command
line shows them in ``python -m resnet train --help`` before anything heavy is imported."""

#: Learning rate per 256 images of the global batch.
LR_PER_256 = 0.256
#: SGD momentum.
MOMENTUM = 0.875
#: Weight decay (1/32768) of convolution and linear weights; BatchNorm parameters and biases are not decayed.
WEIGHT_DECAY = 3.0517578125e-05
#: Label smoothing of the cross-entropy loss.
LABEL_SMOOTHING = 0.1

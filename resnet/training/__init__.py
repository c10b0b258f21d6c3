"""Training and measuring: NVIDIA's recipe (:mod:`~resnet.training.recipe`), the trainer
(:mod:`~resnet.training.trainer`), run folders and their files (:mod:`~resnet.training.run_files`), accuracy
(:mod:`~resnet.training.metrics`, :mod:`~resnet.training.evaluation`), charts (:mod:`~resnet.training.plots`) and
torchrun processes (:mod:`~resnet.training.distributed`)."""

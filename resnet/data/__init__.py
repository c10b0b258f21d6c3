"""Images in, tensors out: preprocessing constants and transforms (:mod:`~resnet.data.preprocessing`), ImageNet's
class names (:mod:`~resnet.data.synsets`) and printable names (:mod:`~resnet.data.names`), opening and decoding
images safely (:mod:`~resnet.data.images`, :mod:`~resnet.data.decode`, :mod:`~resnet.data.files`), expanding
command inputs and scanning folders (:mod:`~resnet.data.inputs`, :mod:`~resnet.data.folders`), batching
(:mod:`~resnet.data.batch`, :mod:`~resnet.data.loading`) and prediction charts (:mod:`~resnet.data.display`).

Depends only on :mod:`resnet.io`. ``processing_utils`` (NVIDIA's hub utils) is a thin layer over it.
"""

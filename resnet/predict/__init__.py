"""Batch classification as a library: the engine, results as a Parquet dataset, and Ray Data.

- :mod:`resnet.predict.engine`: classify a stream of inputs in order, batch by batch (``python -m resnet
  classify`` runs on it);
- :mod:`resnet.predict.results`: the results dataset (Parquet part files written whole, read back to resume);
- :mod:`resnet.predict.sources`: listing the inputs of a job (folders, list files, URLs, ``s3://`` and other
  URIs of pyarrow's file systems);
- :mod:`resnet.predict.model`: the model a job runs (PyTorch fast path or an exported ONNX model);
- :mod:`resnet.predict.ray_data`: :class:`~resnet.predict.ray_data.Classifier` for ``Dataset.map_batches``
  and the ``--engine ray`` pipeline (needs ``pip install -r requirements-ray.txt``).

It sits between the command line and the training layer: it imports the layers below (data, weights, models,
the fast path, the runtimes), never :mod:`resnet.cli`.
"""

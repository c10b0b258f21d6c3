"""Bottom layer: bytes on the wire and on disk — HTTP downloads with limits and timeouts
(:mod:`~resnet.io.download`), atomic writes that never leave a half-written file (:mod:`~resnet.io.atomic`) and
recognising a file by its first bytes (:mod:`~resnet.io.filetypes`). Imports nothing else of the package."""

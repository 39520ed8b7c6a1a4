"""ONNX export of interaction variants (``mice-bench export --format onnx``) and their
onnxruntime runner (``latency --runtime ort``). See ``docs/export.md``."""

"""ONNX export (``export.onnx_export``, needs torch) and the ONNX Runtime backend (``export.ort_backend``,
NumPy + onnxruntime only). Nothing is imported here, so importing the backend never pulls in torch."""

"""The session-based recommendation models (inference only), TorchScript export and the micro-benchmark."""

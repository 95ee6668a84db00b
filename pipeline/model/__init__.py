"""The model around cmcl_core: fitting, run results, ONNX export and scoring."""

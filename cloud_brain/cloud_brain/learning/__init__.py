"""Learning flow: the consolidation scheduler, the memory levels (L0-L3), training, evaluation, ONNX export."""

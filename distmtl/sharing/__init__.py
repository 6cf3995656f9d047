"""Selective Sharing's decision pipeline: task gradients → tensor-train factors → HDBSCAN groups → merge plan.

Pure functions of arrays, free of torch.distributed: the architecture gathers the gradients and
applies the plan; rank 0 alone runs this pipeline and broadcasts the result.
"""

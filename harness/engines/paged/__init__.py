"""A vLLM-style engine: paged KV cache, continuous batching, preemption by recompute or swap.

sequence, block_manager and scheduler are plain Python bookkeeping (no torch); model_runner does
the tensor work; engine ties them together: step() = schedule -> run -> postprocess.
"""

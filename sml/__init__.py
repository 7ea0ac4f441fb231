"""The method: matrix factorisation, the SML transfer, sequential meta-learning and the baselines.

Tensors in, tensors out: nothing here speaks HTTP, SQL or Redis.
"""

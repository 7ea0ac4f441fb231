"""The serving engine: the model versions a replica holds and swaps (built from the
store's model artifact), top-k scoring (float32, int8 candidates, precomputed lists),
the seen items it leaves out, and one recommendation path for single and batch
requests. No HTTP here: ``service/`` is the web layer on top of it."""

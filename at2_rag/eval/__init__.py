"""Evaluation and benchmarks (not needed to attribute): HotpotQA rows, attribution metrics (LDS, top-k drop),
answer metrics, the pruning benchmark and the citation benchmark."""

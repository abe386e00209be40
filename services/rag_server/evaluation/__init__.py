"""Evaluation and benchmarks: BEIR datasets, nDCG/Recall/MRR, latency, peers."""

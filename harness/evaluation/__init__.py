"""Embeddings -> numbers: ``metrics`` (Recall@k, MAP@R, R-Precision, mAP@1000, NMI from one exact
kNN pass), ``knn`` (chunked faiss and torch engines, approximate modes), ``clustering`` (k-means
for NMI), ``structure`` (rho, pi_density, sigma2_kappa, g2)."""

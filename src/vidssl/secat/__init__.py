"""SeCAt: self-context adaptation of a small vision-language model with self-supervised features
(Derakhshani et al., arXiv 2310.00500). Unlabelled images are clustered with a frozen encoder's
features, each cluster gets a pseudo-word, and a mapping from image features to a frozen causal
LM's input embeddings learns to name a query image from interleaved (image, "This is a <word>.")
context. docs/secat.md lists every choice the abstract leaves open.

`transformers` is the optional extra `vidssl[secat]`; it is imported only where an LM is loaded.
"""

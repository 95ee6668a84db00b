"""CMCL core: the algorithm only (torch, numpy, scipy). Arrays in, fitted estimator out."""

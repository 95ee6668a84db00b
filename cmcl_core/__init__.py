"""CMCL core: the algorithm only (torch, numpy, scipy). Arrays in, fitted estimator out.

Modules, in the order imports run (each imports only modules above it)::

    variables    VariableType, UEncoding: the observed variables' types and encoding
    graph        cycles, topological order, thresholding, masks, edge lists (numpy)
    acyclicity   h(W) and the augmented Lagrangian that drives it to zero
    losses       ELBO, KL, DAG and CR loss terms as pure functions of tensors
    config       CMCLConfig: the estimator's settings
    dag          NotearsMLP and learn_dag, the DAG learner alone
    orientation  orient_edges: edge directions by likelihood
    structure    the final DAG solve, its orientation and the causal functions
    nets         the conv encoder/decoder and the MLPs
    network      CMCLNetwork: every module of a CMCL model
    objective    the joint objective on a minibatch (Eq. 14)
    rotation     the sparse latent rotation
    training     fit_network: Algorithm 1 and the structure step
    estimator    CMCL: the scikit-learn-style estimator
    metrics      count_accuracy, mcc, mic, mic_matched
    simulate     the paper's synthetic data
"""

from cmcl_core.config import CMCLConfig
from cmcl_core.dag import learn_dag
from cmcl_core.estimator import CMCL
from cmcl_core.metrics import count_accuracy, mcc, mic, mic_matched
from cmcl_core.variables import VariableType

__all__ = [
    "CMCL",
    "CMCLConfig",
    "VariableType",
    "count_accuracy",
    "learn_dag",
    "mcc",
    "mic",
    "mic_matched",
]

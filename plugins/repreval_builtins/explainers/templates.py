"""The part templates, the mutual-information filter loss and the peak mask of interpretable filters
(Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks", CVPR 2018; ``../shared/METHOD.md``).

For one filter with h×w output maps x (after ReLU), over the images X of a batch:

* positive templates T_mu, one per position mu: ``t_ij = tau·max(1 - beta·||(i,j) - mu||_1 / n, -1)``, and one
  negative template T- with ``t_ij = -tau``; n = sqrt(h·w) (the side of a square map), tau = 0.5 / n² by default;
* priors p(T_mu) = alpha / n², p(T-) = 1 - alpha with alpha = n² / (1 + n²) (all equal);
* p(x | T) = exp(tr(x·T)) / Z_T, Z_T summed over the batch; p(T | x) by Bayes; p(T+ | x) = sum_mu p(T_mu | x);
* Loss_f = H(T' | X) + sum_x p(T+, x) H(T+ | X = x), which is -MI(X; T) up to the constant -H(T).

Everything runs in log space (logsumexp) and is vectorised over filters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def positive_templates(height: int, width: int, beta: float = 4.0, tau: float | None = None) -> Tensor:
    """[h·w, h, w]: template ``k`` peaks at position ``mu = divmod(k, w)`` with value tau and falls off with the
    L1 distance to -tau (``t_ij = tau·max(1 - beta·||(i,j) - mu||_1 / n, -1)``)."""
    tau = default_tau(height, width) if tau is None else tau
    n = math.sqrt(height * width)
    rows = torch.arange(height, dtype=torch.float32)
    cols = torch.arange(width, dtype=torch.float32)
    grid_i, grid_j = torch.meshgrid(rows, cols, indexing="ij")  # [h, w]
    mu_i, mu_j = grid_i.reshape(-1, 1, 1), grid_j.reshape(-1, 1, 1)  # [h·w, 1, 1]
    distance = (grid_i - mu_i).abs() + (grid_j - mu_j).abs()
    return tau * torch.clamp(1 - beta * distance / n, min=-1.0)


def default_tau(height: int, width: int) -> float:
    """The paper's tau = 0.5 / n² (n² = h·w, the number of positions)."""
    return 0.5 / (height * width)


def template_matrix(height: int, width: int, beta: float = 4.0, tau: float | None = None) -> Tensor:
    """[h·w, h·w + 1]: the positive templates flattened as columns, then the negative template (all -tau)."""
    tau = default_tau(height, width) if tau is None else tau
    positives = positive_templates(height, width, beta, tau).flatten(1).T  # [positions, templates]
    negative = torch.full((height * width, 1), -tau)
    return torch.cat([positives, negative], dim=1)


def filter_loss(maps: Tensor, templates: Tensor) -> Tensor:
    """Loss_f of every filter, [K], for maps [B, K, h, w] of one batch; ``templates`` from :func:`template_matrix`.

    Low when each image's map matches one positive template (one sharp peak) and the choice between
    "has the part" and "has not" is confident; a diffuse map or one with several peaks scores higher."""
    batch, filters = maps.shape[:2]
    positions = templates.shape[1] - 1
    fitness = maps.flatten(2) @ templates.to(maps.dtype)  # tr(x·T): [B, K, templates]
    log_prior = -math.log(1 + positions)  # alpha / n² = 1 - alpha = 1 / (1 + n²)
    log_likelihood = fitness - torch.logsumexp(fitness, dim=0, keepdim=True)  # log p(x | T), normalised over X
    log_joint = log_prior + log_likelihood  # log p(T) p(x | T)
    log_evidence = torch.logsumexp(log_joint, dim=2, keepdim=True)  # log p(x)
    log_posterior = log_joint - log_evidence  # log p(T | x)
    log_positive = torch.logsumexp(log_posterior[..., :positions], dim=2)  # log p(T+ | x): [B, K]
    log_negative = log_posterior[..., positions]  # log p(T- | x)
    p_x = log_evidence.squeeze(2).exp()  # [B, K]
    two_way = -(log_positive.exp() * log_positive + log_negative.exp() * log_negative)
    conditional = (p_x * two_way).sum(dim=0)  # H(T' | X)
    log_q = log_posterior[..., :positions] - log_positive.unsqueeze(2)  # log q(mu | x)
    within = -(log_q.exp() * log_q).sum(dim=2)  # H(T+ | X = x)
    part = (p_x * log_positive.exp() * within).sum(dim=0)
    return conditional + part


def peak_mask(maps: Tensor, beta: float = 4.0) -> Tensor:
    """Each map times its positive template at its own peak, clipped at 0: ``max(x ∘ T_mu*, 0)``, with the
    template divided by tau (1 at the peak) so that masking keeps the activation's scale; the constant is the
    only departure from the paper's formula and the next layer would absorb it anyway."""
    height, width = maps.shape[-2:]
    templates = positive_templates(height, width, beta, tau=1.0).to(maps)  # [h·w, h, w]
    peaks = maps.flatten(2).argmax(dim=2)  # [B, K]
    return torch.relu(maps * templates[peaks])


def overlap_loss(maps: Tensor) -> Tensor:
    """The mean over images and over pairs of distinct filters of the cosine similarity of their maps [B, K, h, w]
    (maps >= 0: 0 for filters firing at disjoint places, 1 for identical ones; a filter that does not fire
    counts 0). repreval's own term against filters collapsing onto one place: neither paper has one."""
    filters = maps.shape[1]
    if filters < 2:
        return maps.new_zeros(())
    unit = torch.nn.functional.normalize(maps.flatten(2), dim=2, eps=1e-12)
    gram = unit @ unit.transpose(1, 2)  # [B, K, K]
    pairs = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (pairs / (filters * (filters - 1))).mean()


#: The original code's temperature ``a`` in its surrogate gradient
SURROGATE_TEMPERATURE = 0.5


def surrogate_filter_loss(maps: Tensor, beta: float = 4.0) -> Tensor:
    """Per filter [K], a loss whose gradient is the one the original Interpretable-CNN code (MatConvNet,
    zqs1022/interpretableCNN, ``our_vl_simplenn.m``, the ``conv_mask`` backward) adds instead of the exact
    gradient of the mutual-information loss, for images that all show the filter's category (the explainer has
    no labels). For filter f and image n, with m the signed mask (the positive template at the map's peak divided
    by tau: 1 at the peak, -1 far away) and a = 0.5:

        s = mean_hw(x ∘ m);  aZ = a·log mean_n exp(mean_hw(x ∘ m') / a), m' the masks in reverse order of
        images and filters (the code's cheap normaliser);  G = exp(s / a)·(s - aZ + a), divided by its mean over
        the batch (per filter);  d loss / d x = -G·m / (N·h·w), G held constant.

    So descent raises each map near its own peak and lowers it far away, by amounts normalised per filter over
    the batch: independent of the activations' scale, unlike the exact gradient. Departures: the code centres
    the mask on the activation-weighted centroid (here the peak, as the paper says), schedules the size as
    1 / (10·epoch) (here ``filter_weight``) and learns the mask's sharpness (here beta fixed)."""
    batch, filters, height, width = maps.shape
    templates = positive_templates(height, width, beta, tau=1.0).to(maps)  # [h·w, h, w]
    masks = templates[maps.detach().flatten(2).argmax(dim=2)]  # [B, K, h, w]
    scores = (maps * masks).mean(dim=(2, 3))  # s: [B, K]
    with torch.no_grad():
        flipped = (maps * masks.flip(0, 1)).mean(dim=(2, 3))
        a = SURROGATE_TEMPERATURE
        normaliser = a * (torch.logsumexp(flipped / a, dim=0) - math.log(batch))  # aZ: [K]
        weights = torch.exp(scores / a) * (scores - normaliser + a)
        weights = torch.nan_to_num(weights / weights.mean(dim=0, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)
    return -(weights * scores).mean(dim=0)

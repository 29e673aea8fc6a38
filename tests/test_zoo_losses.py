"""Every registered DML loss against an independent reference written here from the published
formula as naive Python loops (never by calling pytorch-metric-learning again), on small seeded
float64 inputs with the proxies / centres / betas set explicitly.

Also: what the miners select (semi-hard triplets, Multi-Similarity pairs) against a naive loop,
the distance-weighted sampler's weights and sampling frequencies against the paper's formula,
and how ``class_proxies()`` maps PML's parameter layouts to (num_classes, embed_dim).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from nirbench.methods import METHODS
from nirbench.methods.base import Method

REL = 1e-9  # float64 everywhere: the references agree to ~1e-15; 1e-9 leaves room for order


def build(name: str, num_classes: int, embed_dim: int, **overrides) -> Method:
    info = METHODS.get(name)
    return info.cls(
        num_classes=num_classes, embed_dim=embed_dim, **dict(info.defaults, **overrides)
    ).double()


def unit_rows(x: torch.Tensor | list[list[float]]) -> list[list[float]]:
    rows = x.tolist() if isinstance(x, torch.Tensor) else x
    return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows]


def dot(a: list[float], b: list[float]) -> float:
    return sum(u * v for u, v in zip(a, b))


def dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))


def cross_entropy(logits: list[float], target: int) -> float:
    top = max(logits)
    return -(logits[target] - top - math.log(sum(math.exp(v - top) for v in logits)))


def clustered(seed: int, num_classes: int, per_class: int, dim: int, spread: float = 1.0):
    """Embeddings around random class centres: realistic mixes of easy and hard pairs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    centres = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    x = centres[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x, labels


def random_matrix(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def set_param(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value)


# ================================================================ proxy-based methods
def naive_proxy_anchor(x, labels, proxies, alpha, delta):
    """Kim et al. 2020, eq. 4 (cosine similarity): positives averaged over the classes present
    in the batch, negatives over all classes."""
    xs, ps = unit_rows(x), unit_rows(proxies)
    pos, neg, present = 0.0, 0.0, 0
    for c, p in enumerate(ps):
        members = [i for i, y in enumerate(labels) if y == c]
        if members:
            present += 1
            pos += math.log(1 + sum(math.exp(-alpha * (dot(xs[i], p) - delta)) for i in members))
        neg += math.log(
            1
            + sum(math.exp(alpha * (dot(xs[i], p) + delta)) for i, y in enumerate(labels) if y != c)
        )
    return pos / present + neg / len(ps)


def test_proxy_anchor_matches_published_formula():
    x, labels = clustered(0, num_classes=4, per_class=3, dim=8)  # classes 4, 5: no positives
    method = build("proxy_anchor", num_classes=6, embed_dim=8, alpha=16.0, margin=0.1)
    proxies = random_matrix(1, 6, 8)
    set_param(method.loss.proxies, proxies)
    want = naive_proxy_anchor(x, labels.tolist(), proxies, 16.0, 0.1)
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def naive_proxy_nca(x, labels, proxies, scale):
    """-log softmax over ALL proxies of -scale * ||x^ - p^||^2 (PML's NCA form), batch mean."""
    xs, ps = unit_rows(x), unit_rows(proxies)
    losses = [
        cross_entropy([-scale * dist(xs[i], p) ** 2 for p in ps], y) for i, y in enumerate(labels)
    ]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("scale", [1.0, 9.0])
def test_proxy_nca_matches_formula(scale):
    x, labels = clustered(2, num_classes=4, per_class=3, dim=8)
    method = build("proxy_nca", num_classes=5, embed_dim=8, softmax_scale=scale)
    proxies = random_matrix(3, 5, 8)
    set_param(method.loss.proxies, proxies)
    want = naive_proxy_nca(x, labels.tolist(), proxies, scale)
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def naive_soft_triple(x, labels, centres, la, gamma, delta, tau):
    """Qian et al. 2019, eqs. 5-8 and the centre regulariser (eq. 9), with ``centres`` given as
    [class][k] -> vector: the layout is the reference's, not PML's."""
    xs = unit_rows(x)
    cs = [unit_rows(class_centres) for class_centres in centres]
    total = 0.0
    for i, y in enumerate(labels):
        relaxed = []
        for class_centres in cs:
            sims = [dot(xs[i], w) for w in class_centres]
            z = sum(math.exp(s / gamma) for s in sims)
            relaxed.append(sum(math.exp(s / gamma) / z * s for s in sims))
        logits = [la * (s - (delta if c == y else 0.0)) for c, s in enumerate(relaxed)]
        total += cross_entropy(logits, y)
    loss = total / len(labels)
    num_classes, k = len(cs), len(cs[0])
    if tau and k > 1:
        reg = sum(
            math.sqrt(max(2.0 - 2.0 * dot(w[s], w[t]), 0.0))
            for w in cs
            for s in range(k)
            for t in range(s + 1, k)
        )
        loss += tau * reg / (num_classes * k * (k - 1))
    return loss


@pytest.mark.parametrize("tau", [0.0, 0.2])
def test_soft_triple_matches_formula(tau):
    num_classes, k, dim = 5, 3, 8
    x, labels = clustered(4, num_classes=4, per_class=3, dim=dim)
    method = build(
        "soft_triple",
        num_classes=num_classes,
        embed_dim=dim,
        centers_per_class=k,
        center_reg_weight=tau,
    )
    centres = random_matrix(5, num_classes, k, dim)  # [class][k]
    # Our reading of PML's layout: class c owns the contiguous columns c*K .. c*K+K-1 of fc.
    set_param(method.loss.fc, centres.reshape(num_classes * k, dim).t())
    d = METHODS.get("soft_triple").defaults
    want = naive_soft_triple(
        x, labels.tolist(), centres.tolist(), d["la"], d["gamma"], d["margin"], tau
    )
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def test_soft_triple_column_layout_and_proxies():
    """Column j of PML's fc belongs to class j // K: an embedding equal to one centre scores
    highest for exactly that class; class_proxies() averages exactly those columns."""
    num_classes, k, dim = 4, 3, 16
    method = build("soft_triple", num_classes=num_classes, embed_dim=dim, centers_per_class=k)
    fc = random_matrix(6, dim, num_classes * k)
    set_param(method.loss.fc, fc)
    for column in range(num_classes * k):
        x = fc[:, column].unsqueeze(0)
        relaxed = method.loss.get_logits(x)  # (1, C): PML's soft class similarities
        assert int(relaxed.argmax()) == column // k

    got = method.class_proxies()
    assert got.shape == (num_classes, dim)
    for c in range(num_classes):
        cols = unit_rows(fc[:, c * k : (c + 1) * k].t())
        mean = [sum(col[j] for col in cols) / k for j in range(dim)]
        want = unit_rows([mean])[0]
        assert got[c].tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)

    # Differentiable w.r.t. fc, and class 2's proxy depends on class 2's columns only.
    got[2].sum().backward()
    grad = method.loss.fc.grad.abs().sum(dim=0)
    assert (grad[2 * k : 3 * k] > 0).all()
    assert grad[: 2 * k].sum() == 0 and grad[3 * k :].sum() == 0


def naive_normalized_softmax(x, labels, weights_cd, temperature):
    xs, ws = unit_rows(x), unit_rows(weights_cd)
    losses = [
        cross_entropy([dot(xs[i], w) / temperature for w in ws], y) for i, y in enumerate(labels)
    ]
    return sum(losses) / len(losses)


def test_normalized_softmax_matches_formula():
    x, labels = clustered(7, num_classes=4, per_class=3, dim=8)
    method = build("normalized_softmax", num_classes=5, embed_dim=8, temperature=0.1)
    proxies = random_matrix(8, 5, 8)  # (C, D): the harness's view
    set_param(method.loss.W, proxies.t())
    want = naive_normalized_softmax(x, labels.tolist(), proxies, 0.1)
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def naive_arcface(x, labels, weights_cd, margin, scale):
    """Deng et al. 2019 (eq. 3) with the official code's fallback cos(t) - m sin(m) when
    t + m would pass pi."""
    xs, ws = unit_rows(x), unit_rows(weights_cd)
    total = 0.0
    for i, y in enumerate(labels):
        cosines = [dot(xs[i], w) for w in ws]
        theta = math.acos(max(-1.0, min(1.0, cosines[y])))
        if theta <= math.pi - margin:
            target = math.cos(theta + margin)
        else:
            target = cosines[y] - margin * math.sin(margin)
        logits = [scale * (target if c == y else cos) for c, cos in enumerate(cosines)]
        total += cross_entropy(logits, y)
    return total / len(labels)


def test_arcface_matches_formula_on_both_branches():
    x, labels = clustered(9, num_classes=4, per_class=3, dim=8)
    proxies = random_matrix(10, 5, 8)
    # Sample 0 points almost opposite its class weight: theta > pi - m, the fallback branch.
    x[0] = -proxies[int(labels[0])] + 0.01 * random_matrix(11, 8)
    method = build("arcface", num_classes=5, embed_dim=8, margin=0.5, scale=16.0)
    set_param(method.loss.W, proxies.t())
    angle = math.acos(float(F.cosine_similarity(x[0], proxies[int(labels[0])], dim=0)))
    assert angle > math.pi - 0.5
    want = naive_arcface(x, labels.tolist(), proxies, 0.5, 16.0)
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def naive_cosface(x, labels, weights_cd, margin, scale):
    xs, ws = unit_rows(x), unit_rows(weights_cd)
    total = 0.0
    for i, y in enumerate(labels):
        logits = [scale * (dot(xs[i], w) - (margin if c == y else 0.0)) for c, w in enumerate(ws)]
        total += cross_entropy(logits, y)
    return total / len(labels)


def test_cosface_matches_formula():
    x, labels = clustered(12, num_classes=4, per_class=3, dim=8)
    method = build("cosface", num_classes=5, embed_dim=8, margin=0.35, scale=16.0)
    proxies = random_matrix(13, 5, 8)
    set_param(method.loss.W, proxies.t())
    want = naive_cosface(x, labels.tolist(), proxies, 0.35, 16.0)
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


@pytest.mark.parametrize("name", ["normalized_softmax", "arcface", "cosface"])
def test_weight_matrix_methods_expose_rows_as_class_proxies(name):
    """PML's W is (D, C); class_proxies() must be (C, D) with row c = class c's weight: an
    embedding equal to row c has the lowest loss under label c."""
    num_classes, dim = 5, 12
    method = build(name, num_classes=num_classes, embed_dim=dim)
    set_param(method.loss.W, random_matrix(14, dim, num_classes))
    proxies = method.class_proxies()
    assert proxies.shape == (num_classes, dim)
    assert torch.equal(proxies, method.loss.W.t())
    for c in range(num_classes):
        x = proxies[c].detach().unsqueeze(0)
        losses = [method(x, torch.tensor([y])).item() for y in range(num_classes)]
        assert min(range(num_classes), key=losses.__getitem__) == c
    proxies[1].sum().backward()
    grad = method.loss.W.grad
    assert (grad[:, 1] == 1).all() and grad[:, [0, 2, 3, 4]].abs().sum() == 0


def test_proxy_nca_class_proxies_are_its_proxies():
    method = build("proxy_nca", num_classes=5, embed_dim=8)
    assert method.class_proxies() is method.loss.proxies
    assert method.class_proxies().shape == (5, 8)


# ================================================================ pair-based methods
def naive_ms_pairs(x, labels, eps):
    """Wang et al. 2019, eqs. 7-8: positives with s_ij - eps < max negative similarity,
    negatives with s_ik + eps > min positive similarity (cosine similarities)."""
    xs = unit_rows(x)
    n = len(labels)
    s = [[dot(xs[i], xs[j]) for j in range(n)] for i in range(n)]
    pos_pairs, neg_pairs = set(), set()
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [k for k in range(n) if labels[k] != labels[i]]
        if not pos or not neg:
            continue
        min_pos, max_neg = min(s[i][j] for j in pos), max(s[i][k] for k in neg)
        pos_pairs |= {(i, j) for j in pos if s[i][j] - eps < max_neg}
        neg_pairs |= {(i, k) for k in neg if s[i][k] + eps > min_pos}
    return pos_pairs, neg_pairs, s


def naive_multi_similarity(x, labels, alpha, beta, base, eps):
    """Eq. 10 on the mined pairs, averaged over the whole batch."""
    pos_pairs, neg_pairs, s = naive_ms_pairs(x, labels, eps)
    total = 0.0
    for i in range(len(labels)):
        pos = [s[i][j] for a, j in pos_pairs if a == i]
        neg = [s[i][k] for a, k in neg_pairs if a == i]
        if pos and neg:  # PML keeps only anchors with both kinds of mined pairs
            total += math.log(1 + sum(math.exp(-alpha * (v - base)) for v in pos)) / alpha
            total += math.log(1 + sum(math.exp(beta * (v - base)) for v in neg)) / beta
    return total / len(labels)


def test_multi_similarity_miner_selects_the_naive_pairs():
    x, labels = clustered(15, num_classes=5, per_class=4, dim=8, spread=0.7)
    method = build("multi_similarity", num_classes=5, embed_dim=8)
    a1, p, a2, n = method.miner(x, labels)
    eps = METHODS.get("multi_similarity").defaults["miner_epsilon"]
    want_pos, want_neg, _ = naive_ms_pairs(x, labels.tolist(), eps)
    assert set(zip(a1.tolist(), p.tolist())) == want_pos
    assert set(zip(a2.tolist(), n.tolist())) == want_neg
    assert 0 < len(want_pos) < 20 * 3 and 0 < len(want_neg) < 20 * 16  # both kinds filtered


def test_multi_similarity_matches_formula():
    x, labels = clustered(15, num_classes=5, per_class=4, dim=8, spread=0.7)
    d = METHODS.get("multi_similarity").defaults
    method = build("multi_similarity", num_classes=5, embed_dim=8)
    want = naive_multi_similarity(
        x, labels.tolist(), d["alpha"], d["beta"], d["base"], d["miner_epsilon"]
    )
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def naive_contrastive(x, labels, pos_margin, neg_margin):
    """Hinge on Euclidean distances of normalised embeddings over all ordered pairs; each half
    averaged over its pairs with non-zero loss. Returns (loss, #zero-loss negatives)."""
    xs = unit_rows(x)
    n = len(labels)
    pos, neg = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = dist(xs[i], xs[j])
            if labels[i] == labels[j]:
                pos.append(max(d - pos_margin, 0.0))
            else:
                neg.append(max(neg_margin - d, 0.0))
    pos_nz, neg_nz = [v for v in pos if v > 0], [v for v in neg if v > 0]
    loss = (sum(pos_nz) / len(pos_nz) if pos_nz else 0.0) + (
        sum(neg_nz) / len(neg_nz) if neg_nz else 0.0
    )
    return loss, len(neg) - len(neg_nz)


@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (0.3, 1.2)])
def test_contrastive_matches_formula(pos_margin, neg_margin):
    x, labels = clustered(16, num_classes=4, per_class=3, dim=8)
    method = build(
        "contrastive", num_classes=4, embed_dim=8, pos_margin=pos_margin, neg_margin=neg_margin
    )
    want, zero_negatives = naive_contrastive(x, labels.tolist(), pos_margin, neg_margin)
    assert zero_negatives > 0  # the non-zero averaging was exercised
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def naive_semihard_triplets(x, labels, margin):
    """FaceNet's semi-hard triplets on squared distances: 0 < d_an - d_ap <= margin."""
    xs = unit_rows(x)
    n = len(labels)
    d = [[dist(xs[i], xs[j]) ** 2 for j in range(n)] for i in range(n)]
    kept = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for neg in range(n):
                if labels[neg] != labels[a] and 0 < d[a][neg] - d[a][p] <= margin:
                    kept.append((a, p, neg))
    return kept, d


def test_triplet_semihard_miner_and_loss_match_naive_loop():
    x, labels = clustered(17, num_classes=4, per_class=3, dim=8, spread=0.8)
    margin = METHODS.get("triplet").defaults["margin"]
    method = build("triplet", num_classes=4, embed_dim=8)
    want_triplets, d = naive_semihard_triplets(x, labels.tolist(), margin)
    a, p, n = method.miner(x, labels)
    got = list(zip(a.tolist(), p.tolist(), n.tolist()))
    assert sorted(got) == sorted(want_triplets) and len(got) == len(set(got))
    all_triplets = 4 * 3 * 2 * 9
    assert 0 < len(want_triplets) < all_triplets / 2  # most triplets are not semi-hard
    losses = [d[a][p] - d[a][n] + margin for a, p, n in want_triplets]
    want = sum(v for v in losses if v > 0) / sum(v > 0 for v in losses)
    assert method(x, labels).item() == pytest.approx(want, rel=REL)


def test_triplet_without_semihard_triplets_is_zero_with_graph():
    method = build("triplet", num_classes=4, embed_dim=8)
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    loss = method(x, torch.arange(6))  # no positive pairs: nothing to mine
    assert loss.item() == 0.0 and loss.requires_grad


def naive_margin_loss(x, labels, triplets, betas, margin, nu):
    """Wu et al. 2017, eq. 4 on the given triplets with class boundary beta of the anchor's
    class (+ nu * beta per triplet), normalised by the number of non-zero hinge terms."""
    xs = unit_rows(x)
    terms, reg = [], 0.0
    for a, p, n in triplets:
        beta = betas[labels[a]]
        terms.append(max(dist(xs[a], xs[p]) - beta + margin, 0.0))
        terms.append(max(beta - dist(xs[a], xs[n]) + margin, 0.0))
        reg += nu * beta
    nonzero = sum(t > 0 for t in terms)
    return (sum(terms) + reg) / nonzero


@pytest.mark.parametrize("nu", [0.0, 0.1])
def test_margin_loss_on_the_sampled_triplets_matches_formula(nu):
    x, labels = clustered(18, num_classes=4, per_class=3, dim=8, spread=0.8)
    method = build("margin", num_classes=4, embed_dim=8, nu=nu)
    betas = torch.tensor([1.0, 1.1, 1.2, 1.3], dtype=torch.float64)
    set_param(method.loss.beta, betas)
    torch.manual_seed(0)
    a, p, n = method.miner(x, labels)
    triplets = list(zip(a.tolist(), p.tolist(), n.tolist()))
    torch.manual_seed(0)  # the method draws the very same triplets
    got = method(x, labels)
    d = METHODS.get("margin").defaults
    want = naive_margin_loss(x, labels.tolist(), triplets, betas.tolist(), d["margin"], nu)
    assert got.item() == pytest.approx(want, rel=REL)
    got.backward()
    assert (method.loss.beta.grad != 0).any()  # the per-class betas learn
    [group] = method.param_groups()
    assert group["params"] == [method.loss.beta] and group["lr_mult"] == d["beta_lr_mult"]
    assert method.class_proxies() is None and method.class_betas().shape == (4,)


def naive_distance_weights(x, labels, cutoff, nonzero_cutoff):
    """Wu et al. 2017, section 4: q(d)^-1 = d^(2-D) (1 - d^2/4)^(-(D-3)/2) with d clipped
    below at ``cutoff``, zero for positives and for d >= ``nonzero_cutoff``; row-normalised."""
    xs = unit_rows(x)
    dim, n = len(xs[0]), len(labels)
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            d = max(dist(xs[i], xs[j]), cutoff)
            keep = labels[i] != labels[j] and d < nonzero_cutoff
            row.append(d ** (2 - dim) * (1 - d * d / 4) ** (-(dim - 3) / 2) if keep else 0.0)
        total = sum(row)
        rows.append([w / total for w in row] if total > 0 else row)
    return rows


def sampler_inputs():
    # dim 6 keeps the weights moderate, so every negative below 1.4 has a visible probability.
    return clustered(19, num_classes=3, per_class=3, dim=6, spread=1.5)


def test_distance_weighted_sampler_weights_match_formula(monkeypatch):
    import pytorch_metric_learning.miners.distance_weighted_miner as dwm

    x, labels = sampler_inputs()
    method = build("margin", num_classes=3, embed_dim=6)
    captured = {}
    real = dwm.lmu.get_random_triplet_indices

    def spy(labels_, ref_labels=None, t_per_anchor=None, weights=None):
        captured["weights"] = weights.clone()
        return real(labels_, ref_labels=ref_labels, t_per_anchor=t_per_anchor, weights=weights)

    monkeypatch.setattr(dwm.lmu, "get_random_triplet_indices", spy)
    method.miner(x, labels)
    d = METHODS.get("margin").defaults
    want = naive_distance_weights(
        x, labels.tolist(), d["sampler_cutoff"], d["sampler_nonzero_loss_cutoff"]
    )
    got = captured["weights"].tolist()
    zeros_for_far_negatives = 0
    for i, (got_row, want_row) in enumerate(zip(got, want)):
        assert got_row == pytest.approx(want_row, rel=1e-9, abs=1e-12)
        zeros_for_far_negatives += sum(
            w == 0 for j, w in enumerate(want_row) if labels[j] != labels[i]
        )
    assert zeros_for_far_negatives > 0  # the 1.4 cut-off was exercised


def test_distance_weighted_sampler_draws_negatives_with_those_weights():
    """Empirical negative frequencies per anchor over many seeded draws match the naive
    weights; positives are same-class and distinct from the anchor, negatives never >= 1.4."""
    x, labels = sampler_inputs()
    lab = labels.tolist()
    method = build("margin", num_classes=3, embed_dim=6)
    d = METHODS.get("margin").defaults
    want = naive_distance_weights(x, lab, d["sampler_cutoff"], d["sampler_nonzero_loss_cutoff"])
    counts: dict[int, Counter] = {i: Counter() for i in range(len(lab))}
    torch.manual_seed(0)
    for _ in range(400):
        a, p, n = method.miner(x, labels)
        for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
            assert lab[pi] == lab[ai] and pi != ai and lab[ni] != lab[ai]
            counts[ai][ni] += 1
    for anchor, row in enumerate(want):
        drawn = sum(counts[anchor].values())
        if not any(row):
            assert drawn == 0  # every negative beyond 1.4: the anchor is skipped
            continue
        assert drawn == 400 * 3  # PML: as many triplets per anchor as its class has samples
        for j, w in enumerate(row):
            assert counts[anchor][j] / drawn == pytest.approx(w, abs=0.05)


def test_soft_triple_block_centre_regularizer_equals_pmls_full_matrix_version():
    """Our per-class tau term against PML's SparseCentersRegularizer (the (C*K)^2 version it
    replaces for scale), as the oracle, value and gradient."""
    from pytorch_metric_learning.losses import SoftTripleLoss
    from pytorch_metric_learning.regularizers import SparseCentersRegularizer

    num_classes, k, dim = 6, 4, 8
    x, labels = clustered(7, num_classes=num_classes, per_class=3, dim=dim)
    ours = build(
        "soft_triple",
        num_classes=num_classes,
        embed_dim=dim,
        centers_per_class=k,
        center_reg_weight=0.2,
    )
    d = METHODS.get("soft_triple").defaults
    pml = SoftTripleLoss(
        num_classes,
        dim,
        centers_per_class=k,
        la=d["la"],
        gamma=d["gamma"],
        margin=d["margin"],
        weight_reg_weight=0.2,
        weight_regularizer=SparseCentersRegularizer(num_classes, k),
    ).double()
    with torch.no_grad():
        pml.fc.copy_(ours.loss.fc)
    a, b = ours(x, labels), pml(x, labels.long())
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    a.backward()
    b.backward()
    assert torch.allclose(ours.loss.fc.grad, pml.fc.grad, rtol=1e-10, atol=1e-12)

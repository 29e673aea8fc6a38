"""ProxyAnchor, Multi-Similarity and NIR against naive versions of their published formulas."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nirbench.methods.base import METHODS, REGULARIZERS
from nirbench.methods.multi_similarity import MultiSimilarity
from nirbench.methods.nir import EXP_FORM_MAX_EXPONENT, NIR, NonFiniteLossError
from nirbench.methods.proxy_anchor import ProxyAnchor

NIR_SMALL = dict(
    REGULARIZERS.get("nir").defaults,
    blocks=2,
    subnet_depth=3,
    subnet_width=32,
    proxy_source="method",
)  # "auto" is resolved by the config, not the module


def make_nir(embed_dim=8, num_classes=5, **overrides) -> NIR:
    return NIR(num_classes=num_classes, embed_dim=embed_dim, **dict(NIR_SMALL, **overrides))


def make_pa(embed_dim=8, num_classes=5, **overrides) -> ProxyAnchor:
    return ProxyAnchor(
        num_classes=num_classes,
        embed_dim=embed_dim,
        **dict(METHODS.get("proxy_anchor").defaults, **overrides),
    )


# ---------------------------------------------------------------- registry conformance
@pytest.mark.parametrize(
    "kind,name",
    [("method", "proxy_anchor"), ("method", "multi_similarity"), ("regularizer", "nir")],
)
def test_defaults_are_exactly_the_constructor_kwargs(kind, name):
    info = (METHODS if kind == "method" else REGULARIZERS).get(name)
    params = set(inspect.signature(info.cls.__init__).parameters)
    params -= {"self", "num_classes", "embed_dim"}
    assert params == set(info.defaults)
    assert set(info.search_space) <= set(info.defaults)
    defaults = dict(info.defaults)
    if defaults.get("proxy_source") == "auto":  # the config resolves it before building
        defaults["proxy_source"] = "method"
    obj = info.cls(num_classes=4, embed_dim=16, **defaults)
    assert isinstance(obj, torch.nn.Module)


# ---------------------------------------------------------------- ProxyAnchor
def naive_proxy_anchor(x, labels, proxies, alpha, delta):
    """Kim et al. 2020, eq. 4, with cosine similarity, written as loops."""
    x = F.normalize(x, dim=1)
    p = F.normalize(proxies, dim=1)
    num_classes = len(p)
    pos_total, neg_total, with_pos = 0.0, 0.0, 0
    for c in range(num_classes):
        s_pos = sum(
            math.exp(-alpha * (float(x[i] @ p[c]) - delta)) for i in range(len(x)) if labels[i] == c
        )
        s_neg = sum(
            math.exp(alpha * (float(x[i] @ p[c]) + delta)) for i in range(len(x)) if labels[i] != c
        )
        if any(labels[i] == c for i in range(len(x))):
            with_pos += 1
            pos_total += math.log(1 + s_pos)
        neg_total += math.log(1 + s_neg)
    return pos_total / with_pos + neg_total / num_classes


@pytest.mark.parametrize("alpha", [8.0, 32.0])
def test_proxy_anchor_matches_naive_formula(alpha):
    torch.manual_seed(0)
    pa = make_pa(embed_dim=8, num_classes=6, margin=0.1, alpha=alpha).double()
    x = torch.randn(12, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3, 1, 0, 2])  # classes 4, 5 have no positives
    got = pa(x, labels)
    want = naive_proxy_anchor(x, labels.tolist(), pa.class_proxies().detach(), alpha, 0.1)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_proxy_anchor_proxies_and_param_groups():
    pa = make_pa(embed_dim=8, num_classes=6)
    proxies = pa.class_proxies()
    assert proxies.shape == (6, 8) and proxies.requires_grad
    [group] = pa.param_groups()
    assert group["name"] == "proxies" and group["lr_mult"] == 100.0
    assert group["params"][0] is proxies


def test_proxy_anchor_keeps_fp32_proxies_for_half_embeddings():
    pa = make_pa()
    pa(torch.randn(6, 8).half(), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert pa.class_proxies().dtype == torch.float32  # PML alone would cast them to fp16 in place


# ---------------------------------------------------------------- Multi-Similarity
def naive_multi_similarity(x, labels, alpha, beta, base, eps):
    """Wang et al. 2019: MS mining (eqs. 7-8) then the MS loss (eq. 10) averaged over the batch.

    The miner is reproduced naively (this is what PML's MultiSimilarityMiner implements), so the
    comparison is the full miner + loss pipeline, not the all-pairs loss.
    """
    x = F.normalize(x, dim=1)
    s = (x @ x.T).tolist()
    m = len(labels)
    total = 0.0
    for i in range(m):
        pos = [j for j in range(m) if j != i and labels[j] == labels[i]]
        neg = [k for k in range(m) if labels[k] != labels[i]]
        if not pos or not neg:
            continue
        min_pos = min(s[i][j] for j in pos)
        max_neg = max(s[i][k] for k in neg)
        hard_neg = [k for k in neg if s[i][k] + eps > min_pos]
        hard_pos = [j for j in pos if s[i][j] - eps < max_neg]
        lp = math.log(1 + sum(math.exp(-alpha * (s[i][j] - base)) for j in hard_pos)) / alpha
        ln = math.log(1 + sum(math.exp(beta * (s[i][k] - base)) for k in hard_neg)) / beta
        total += lp + ln
    return total / m


def test_multi_similarity_matches_naive_miner_and_formula():
    torch.manual_seed(1)
    info = METHODS.get("multi_similarity")
    ms = MultiSimilarity(num_classes=5, embed_dim=8, **info.defaults)
    labels = torch.arange(5).repeat_interleave(4)
    # Loose class clusters: the miner drops easy positives AND easy negatives, keeps the rest.
    centers = torch.randn(5, 8, dtype=torch.float64)
    x = 1.5 * centers[labels] + torch.randn(20, 8, dtype=torch.float64)
    got = ms(x, labels)
    d = info.defaults
    want = naive_multi_similarity(
        x, labels.tolist(), d["alpha"], d["beta"], d["base"], d["miner_epsilon"]
    )
    assert got.item() == pytest.approx(want, rel=1e-10)
    # The miner really dropped pairs of both kinds, so the naive miner was exercised.
    a1, p, a2, n = ms.miner(x, labels)
    assert 0 < len(a1) < 20 * 3 and 0 < len(a2) < 20 * 16
    assert ms.class_proxies() is None and ms.param_groups() == []


def test_multi_similarity_without_mined_pairs_is_zero_with_graph():
    ms = MultiSimilarity(num_classes=8, embed_dim=4, **METHODS.get("multi_similarity").defaults)
    x = torch.randn(6, 4, requires_grad=True)
    loss = ms(x, torch.arange(6))  # all labels distinct: no positive pair, nothing mined
    assert loss.item() == 0.0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# ---------------------------------------------------------------- NIR
def nir_inputs(seed=2, n=10, dim=8, num_classes=5):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=g, requires_grad=True)
    proxies = torch.randn(num_classes, dim, generator=g, requires_grad=True)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return emb, labels, proxies


@pytest.mark.parametrize("form", ["nll", "exp"])
def test_nir_value_matches_direct_flow_computation(form):
    torch.manual_seed(0)
    nir = make_nir(form=form)
    emb, labels, proxies = nir_inputs()
    got = nir(emb, labels, proxies)
    with torch.no_grad():
        z, logdet = nir.flow(
            emb / emb.norm(dim=1, keepdim=True),
            (proxies / proxies.norm(dim=1, keepdim=True))[labels],
        )
        sq = (z**2).sum(dim=1)
        want = (sq - logdet).mean() if form == "nll" else torch.exp(0.5 * sq - logdet).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("form", ["nll", "exp"])
def test_gradients_reach_embeddings_proxies_and_flow(form):
    torch.manual_seed(0)
    pa = make_pa(embed_dim=8, num_classes=5)
    nir = make_nir(form=form)
    emb, labels, _ = nir_inputs()
    loss = nir(emb, labels, pa.class_proxies())  # NIR alone: proxies get grad only through NIR
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert pa.class_proxies().grad[labels.unique()].abs().sum() > 0
    flow_params = nir.param_groups()[0]["params"]
    assert all(p.grad is not None for p in flow_params)
    assert sum(p.grad.abs().sum() for p in flow_params) > 0


def test_nir_param_groups_hold_all_trainable_flow_params():
    nir = make_nir()
    [group] = nir.param_groups()
    assert group["name"] == "flow" and group["lr_mult"] == NIR_SMALL["flow_lr_mult"]
    assert sum(p.numel() for p in group["params"]) == nir.flow.num_trainable_parameters()
    assert all(p.is_floating_point() for p in group["params"])


def _blow_up(nir: NIR, value: float) -> None:
    """Every subnet's last layer outputs a constant: s saturates, t = value, so ||z|| is huge."""
    with torch.no_grad():
        for block in nir.flow.inn:
            for name in ("subnet1", "subnet2"):
                if hasattr(block, name):
                    last = getattr(block, name)[-1]
                    last.weight.zero_()
                    last.bias.fill_(value)


def test_exp_overflow_raises_non_finite_loss_error():
    nir = make_nir(form="exp")
    _blow_up(nir, 50.0)
    emb, labels, proxies = nir_inputs()
    with pytest.raises(NonFiniteLossError) as err:
        nir(emb, labels, proxies)
    msg = str(err.value)
    assert "'exp'" in msg and "max =" in msg and "form: nll" in msg and "flow_lr_mult" in msg
    assert isinstance(err.value, FloatingPointError)
    # The same flow under the nll form is large but finite: no error.
    nir.form = "nll"
    assert nir(emb, labels, proxies).item() > EXP_FORM_MAX_EXPONENT


def test_nll_non_finite_raises():
    nir = make_nir(form="nll")
    _blow_up(nir, float("nan"))
    emb, labels, proxies = nir_inputs()
    with pytest.raises(NonFiniteLossError, match="'nll'.*not finite"):
        nir(emb, labels, proxies)


def test_nir_without_proxies_raises():
    nir = make_nir()
    emb, labels, _ = nir_inputs()
    with pytest.raises(ValueError, match="NIR needs class proxies"):
        nir(emb, labels, None)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"conditioning": "dense_embed_multi"}, "valid modes: dense, embed_shared"),
        ({"form": "log"}, "form"),
        ({"proxy_source": "auto"}, "resolved by the config loader"),
        ({"weight_convention": "beta"}, "weight_convention"),
    ],
)
def test_nir_rejects_unknown_options(bad, match):
    with pytest.raises(ValueError, match=match):
        make_nir(**bad)


def test_embed_shared_conditioning_builds_and_runs():
    nir = make_nir(conditioning="embed_shared")
    emb, labels, proxies = nir_inputs()
    assert torch.isfinite(nir(emb, labels, proxies))


# ---------------------------------------------------------------- fair arms / RNG
def test_same_seed_same_proxies_with_or_without_nir():
    torch.manual_seed(42)
    np.random.seed(42)
    pa_plain = make_pa(embed_dim=16, num_classes=7)
    next_torch_plain, next_np_plain = torch.rand(4), np.random.rand(4)

    torch.manual_seed(42)
    np.random.seed(42)
    pa_nir = make_pa(embed_dim=16, num_classes=7)
    nir = make_nir(embed_dim=16, num_classes=7)
    next_torch_nir, next_np_nir = torch.rand(4), np.random.rand(4)

    assert torch.equal(pa_plain.class_proxies(), pa_nir.class_proxies())
    # Building NIR consumes no global RNG: whatever comes next (backbone, data order) matches too.
    assert torch.equal(next_torch_plain, next_torch_nir)
    assert np.array_equal(next_np_plain, next_np_nir)
    # ... and the flow is still a deterministic function of the seed.
    torch.manual_seed(42)
    make_pa(embed_dim=16, num_classes=7)
    nir_again = make_nir(embed_dim=16, num_classes=7)
    for a, b in zip(nir.state_dict().values(), nir_again.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(43)
    make_pa(embed_dim=16, num_classes=7)
    nir_other = make_nir(embed_dim=16, num_classes=7)
    first = [n.param_groups()[0]["params"][0] for n in (nir, nir_other)]
    assert not torch.equal(*first)


# ---------------------------------------------------------------- NIR's own-proxy mode
def test_own_mode_conditions_on_its_own_proxies_and_aligns_them_with_proxy_anchor():
    """proxy_source=own: the flow's condition is NIR's proxies (init randn/8), the given ones are
    ignored, and the alignment term is ProxyAnchor (cosine, alpha 32, margin 0.1) on those same
    proxies, recomputed here from the published formula."""
    torch.manual_seed(0)
    nir = make_nir(proxy_source="own")
    emb, labels, other = nir_inputs()
    own = nir.own_proxies()
    assert own.shape == (5, 8) and 0.05 < float(own.detach().std()) < 0.25  # randn / 8
    expected = make_nir(proxy_source="method")
    expected.load_state_dict(
        {k: v for k, v in nir.state_dict().items() if not k.startswith("alignment")}
    )
    assert torch.allclose(nir(emb, labels, other), expected(emb, labels, own))

    sim = F.normalize(emb, dim=1) @ F.normalize(own, dim=1).t()  # (B, C)
    pos = F.one_hot(labels, 5).bool()
    with_pos = pos.any(0)
    pos_term = (
        torch.log1p((torch.exp(-32 * (sim - 0.1)) * pos).sum(0))[with_pos].sum() / with_pos.sum()
    )
    neg_term = torch.log1p((torch.exp(32 * (sim + 0.1)) * ~pos).sum(0)).sum() / 5
    assert torch.allclose(nir.alignment_loss(emb, labels), pos_term + neg_term, atol=1e-5)


def test_own_mode_is_rng_neutral_and_gets_its_own_optimizer_group():
    torch.manual_seed(3)
    make_nir(proxy_source="own")
    after_own = torch.rand(1)
    torch.manual_seed(3)
    make_nir(proxy_source="method")
    assert torch.equal(torch.rand(1), after_own)
    groups = {g["name"]: g for g in make_nir(proxy_source="own").param_groups()}
    assert set(groups) == {"flow", "nir_proxies"} and groups["nir_proxies"]["lr_mult"] == 100.0


def test_objective_puts_the_alignment_term_on_the_method_side():
    from nirbench.harness.train.objective import build_objective

    torch.manual_seed(0)
    ms = METHODS.get("multi_similarity").defaults
    for convention in ("w_align", "lambda"):
        obj = build_objective(
            "multi_similarity",
            ms,
            "nir",
            dict(NIR_SMALL, proxy_source="own", weight=0.3, weight_convention=convention),
            num_classes=5,
            embed_dim=8,
        )
        emb, labels, _ = nir_inputs()
        t = obj(emb, labels)
        method_side = t["loss/method"] + t["loss/nir_align"]
        want = (
            t["loss/nir"] + 0.3 * method_side
            if convention == "w_align"
            else method_side + 0.3 * t["loss/nir"]
        )
        assert torch.allclose(t["loss/total"], want)


def test_proxy_source_auto_resolves_in_the_config_and_own_is_tagged():
    from nirbench.harness.config import ConfigError, load_config
    from nirbench.harness.tracking.store import run_tags

    pair = load_config(
        None, ["method=multi_similarity", "regularizer=nir", "regularizer.proxy_source=auto"]
    )
    proxy = load_config(None, ["regularizer=nir", "regularizer.proxy_source=auto"])
    assert pair.regularizer.params["proxy_source"] == "own"
    assert proxy.regularizer.params["proxy_source"] == "method"
    assert run_tags(pair, "g")["nir.proxy_source"] == "own"
    with pytest.raises(ConfigError, match="proxy_source=own"):
        load_config(
            None, ["method=multi_similarity", "regularizer=nir", "regularizer.proxy_source=method"]
        )
    assert load_config(None, ["method=multi_similarity", "regularizer=nir"]) == pair
    with pytest.raises(ConfigError, match="proxy_source must be one of"):
        load_config(None, ["regularizer=nir", "regularizer.proxy_source=mine"])

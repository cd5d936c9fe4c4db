"""dmlkit.exercises: every reference solution passes; the typical wrong answers fail with the
message that names the mistake; garbage answers are reported, never raised."""


import naive
import numpy as np
import pytest
import torch

from dmlkit import exercises
from dmlkit.exercises import adversarial as ex_adversarial
from dmlkit.exercises import metrics as ex_metrics
from dmlkit.exercises import predictions

NAMES = exercises.available()
IMPLEMENT = [n for n in NAMES if exercises.get(n).kind == "implement"]
MISTAKES = [(n, what) for n in IMPLEMENT for what in exercises.get(n).mistakes]


def _check(name, answer):
    result = exercises.check(name, answer)
    assert isinstance(result, exercises.Feedback)
    return result


# ----------------------------------------------------------------------------- the catalogue
def test_catalogue():
    kinds = {exercises.get(n).kind for n in NAMES}
    assert kinds == {"implement", "predict", "experiment"}
    assert len(IMPLEMENT) == 17
    for notebook in ("01", "02", "03", "04", "05", "06", "07", "08", "11", "12"):
        assert 2 <= len(exercises.available(notebook)) <= 4, notebook
    assert exercises.available("08") == ["recall_at_k", "map_at_r", "kmeanspp_step",
                                         "recall_saturates"]
    assert exercises.available("06") == ["control_probe", "daml_objective", "synthetic_hardness"]
    for name in NAMES:
        ex = exercises.get(name)
        assert ex.hints and ex.statement and ex.title
        if ex.kind == "implement":
            assert len(ex.mistakes) >= 3, name
            assert len(ex.all_cases()) >= 4, name
        assert name in str(exercises.describe(name))
    labels = " ".join(c.label for n in ("contrastive_loss", "triplet_loss")
                      for c in exercises.get(n).all_cases())
    for kind in ("random", "one class", "singletons", "ties", "float16"):
        assert kind in labels


@pytest.mark.parametrize("name", NAMES)
def test_every_solution_passes(name):
    result = _check(name, exercises.solution(name))
    expected = "noted" if exercises.get(name).kind == "experiment" else "passed"
    assert result.status == expected, result.text
    if expected == "passed":
        assert result.text.startswith(f"✓ {name}") and "\n" not in result.text


@pytest.mark.parametrize(("name", "what"), MISTAKES, ids=lambda v: str(v)[:40])
def test_each_catalogued_mistake_is_named(name, what):
    """The checker tells every mistake of its catalogue from the right answer and from the
    other mistakes."""
    result = _check(name, exercises.get(name).mistakes[what])
    assert result.status == "failed"
    assert f"Looks like: {what}." in result.text


def test_the_solution_is_never_printed():
    for name in IMPLEMENT:
        for what, mistake in exercises.get(name).mistakes.items():
            text = _check(name, mistake).text
            assert "def " not in text and "torch.where(" not in text, (name, what)


# ----------------------------------------------------------------------------- wrong answers
def _terms(S, pos, neg, lam):
    return torch.where(pos, -S, 0.0), torch.where(neg, torch.relu(S - lam), 0.0)


def contrastive_sum(S, pos, neg, lam=0.5):          # sum instead of mean
    if not pos.any() or not neg.any():
        return (S * 0).sum()
    p, n = _terms(S, pos, neg, lam)
    return p.sum() + n.sum()


def contrastive_inplace(S, pos, neg, lam=0.5):      # edits S in place: breaks autograd
    if not pos.any() or not neg.any():
        return (S * 0).sum()
    S[~(pos | neg)] = 0.0
    p, n = _terms(S, pos, neg, lam)
    return (p.sum() + n.sum()) / (pos.sum() + neg.sum())


def contrastive_item(S, pos, neg, lam=0.5):         # a Python number: not differentiable
    if not pos.any() or not neg.any():
        return torch.tensor(0.0)
    p, n = _terms(S, pos, neg, lam)
    return torch.tensor(((p.sum() + n.sum()) / (pos.sum() + neg.sum())).item(),
                        dtype=S.dtype)


def contrastive_detached_negatives(S, pos, neg, lam=0.5):   # right value, wrong gradient
    if not pos.any() or not neg.any():
        return (S * 0).sum()
    p, n = _terms(S, pos, neg, lam)
    return (p.sum() + n.detach().sum()) / (pos.sum() + neg.sum())


def triplet_margin_off(S, pos, neg, margin=0.2):    # the margin hard-coded
    valid = pos[:, :, None] & neg[:, None, :]
    v = torch.where(valid, torch.relu(S[:, None, :] - S[:, :, None] + 0.2), 0.0)
    return v.sum() / (v > 0).sum().clamp_min(1)


def triplet_flipped(S, pos, neg, margin=0.2):
    valid = pos[:, :, None] & neg[:, None, :]
    v = torch.where(valid, torch.relu(S[:, :, None] - S[:, None, :] + margin), 0.0)
    return v.sum() / (v > 0).sum().clamp_min(1)


def masks_with_diagonal(labels):
    same = labels[:, None] == labels[None, :]
    return same, ~same


def masks_as_floats(labels):
    same = (labels[:, None] == labels[None, :]).float()
    return same - torch.eye(len(labels)), 1 - same


def ms_unnormalised(S, neg, beta=50.0, lam=0.5):
    return torch.where(neg, torch.exp(beta * (S - lam)), 0.0)


def recall_with_self(D, labels, k):
    order = torch.argsort(D, dim=1, stable=True)[:, :k]
    has = (labels[:, None] == labels[None, :]).sum(1) > 1
    return float((labels[order] == labels[:, None]).any(1)[has].double().mean())


def lse_no_rescale(m, acc, z):
    new = torch.maximum(m, z.amax(1))
    safe = torch.where(torch.isfinite(new), new, torch.zeros_like(new))
    return new, acc + torch.exp(z - safe[:, None]).sum(1)


def kmeanspp_distance(X, centres, u):
    d = torch.cdist(X.double(), X.double()[centres]).min(1).values
    cum = d.cumsum(0)
    return int(torch.searchsorted(cum, u * cum[-1]))


def fifo_keeps_graph(memory, mem_labels, pointer, filled, emb, lab):
    slots = (pointer + torch.arange(len(lab))) % memory.shape[0]
    memory = memory.clone()
    memory[slots] = emb
    mem_labels[slots] = lab
    return memory, mem_labels, (pointer + len(lab)) % memory.shape[0], \
        min(filled + len(lab), memory.shape[0])


def osm_sigma_unsquared(D, pos, neg, sigma=0.8, alpha=1.2):
    return torch.exp(-D ** 2 / sigma) * pos, torch.clamp(alpha - D, min=0) * neg


def caa_softmax_over_samples(f, labels, centres, scale=1.0):
    z = scale * torch.nn.functional.normalize(f, dim=1) @ \
        torch.nn.functional.normalize(centres, dim=1).T
    a = torch.softmax(z, dim=0)[torch.arange(len(labels)), labels]
    return torch.minimum(a[:, None], a[None, :])


def daml_with_norms(anchor, positive, negative, synthetic, lambda1=1.0, lambda2=1.0, alpha=1.0):
    d_syn = (synthetic - anchor).norm(dim=1)
    j_adv = torch.relu(d_syn - (positive - anchor).norm(dim=1) - alpha)
    return (d_syn + lambda1 * (synthetic - negative).norm(dim=1) + lambda2 * j_adv).mean()


def hardness_as_dict(anchor, positive, synthetic, margin=0.0):
    d_ap, d_as = (positive - anchor).norm(dim=1), (synthetic - anchor).norm(dim=1)
    return {"d_ap": d_ap.mean(), "d_asyn": d_as.mean(), "violating": (d_as < d_ap + margin)}


def positive_objective_entry_mean(anchor, positive, synthetic_positive, lambda1=1.0):
    return ((synthetic_positive - anchor) ** 2 + lambda1 * (synthetic_positive - positive) ** 2
            ).mean()


@pytest.mark.parametrize(("name", "answer", "words"), [
    ("osm_weights", osm_sigma_unsquared, ["Looks like: sigma is not squared"]),
    ("caa_attention", caa_softmax_over_samples, ["Looks like: the softmax runs over the samples"]),
    ("daml_objective", daml_with_norms, ["Looks like: the distances are not squared"]),
    ("synthetic_hardness", hardness_as_dict, ["three numbers", "dict"]),
    ("positive_objective", positive_objective_entry_mean, ["a mean over every coordinate"]),
    ("contrastive_loss", contrastive_sum, ["the sum instead of the mean"]),
    ("contrastive_loss", contrastive_inplace, ["in place", "torch.where", "line"]),
    ("contrastive_loss", contrastive_item, ["not connected", "case 1 of"]),
    ("contrastive_loss", contrastive_detached_negatives, ["gradient", "wrong", "detach"]),
    ("triplet_loss", triplet_margin_off, ["margin = 0.5", "Looks like: the margin passed in"]),
    ("triplet_loss", triplet_flipped, ["the sign is flipped"]),
    ("pair_masks", masks_with_diagonal, ["the diagonal is counted as a positive pair"]),
    ("pair_masks", masks_as_floats, ["dtype float32", "bool mask"]),
    ("ms_negative_weights", ms_unnormalised, ["the normalisation is missing"]),
    ("recall_at_k", recall_with_self, ["the query itself is in its own ranking"]),
    ("lse_update", lse_no_rescale, ["after tile 2", "not rescaled"]),
    ("kmeanspp_step", kmeanspp_distance, ["proportional to the distance D, not to its square"]),
    ("fifo_enqueue", fifo_keeps_graph, ["requires grad", "detach"]),
], ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", ""))
def test_wrong_answers_written_by_hand_are_named(name, answer, words):
    result = _check(name, answer)
    assert result.status == "failed"
    for word in words:
        assert word in result.text, (word, result.text)


def test_first_failing_case_is_printed_with_its_input():
    result = _check("contrastive_loss", contrastive_sum)
    lines = result.text.splitlines()
    assert lines[0].startswith("✗ contrastive_loss: your loss is ")
    assert "off by" in lines[0]
    assert lines[1] == "  on case 1 of 8: random: a batch of 5 (2 classes)"
    assert "labels = [0, 1, 0, 1, 1]" in result.text and "lam = 0.5" in result.text


def test_degenerate_batches_are_reported():
    def no_guard(S, pos, neg, lam=0.5):
        p, n = _terms(S, pos, neg, lam)
        return (p.sum() + n.sum()) / (pos.sum() + neg.sum())

    text = _check("contrastive_loss", no_guard).text
    assert "one class: no negative pair" in text and "dmlkit's convention" in text

    def nan_gradient(S, pos, neg, lam=1.0):            # log(0) of an empty row: 0 * inf
        lp = torch.log((torch.exp(-S) * pos).sum(1))
        ln = torch.log((torch.exp(S) * neg).sum(1))
        live = pos.any(1) & neg.any(1)
        return torch.where(live, torch.relu(lp + ln + lam), 0.0).sum() / S.shape[0]

    text = _check("lifted_loss", nan_gradient).text
    assert "gradient" in text and "NaN" in text and "one class" in text


def test_half_precision_overflow_is_reported():
    def naive_ms(S, neg, beta=50.0, lam=0.5):
        e = torch.where(neg, torch.exp(beta * (S - lam)), 0.0)
        return e / (1 + e.sum(1, keepdim=True))

    text = _check("ms_negative_weights", naive_ms).text
    assert "float16" in text and "NaN" in text and "float32" in text


# ----------------------------------------------------------------------------- garbage
def placeholder(S, pos, neg, lam=0.5):
    raise NotImplementedError


def placeholder_any(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize(("answer", "status", "words"), [
    (placeholder, "not implemented", ["not implemented yet"]),
    (None, "not implemented", ["not implemented yet"]),
    (3, "failed", ["expected a function", "int"]),
    ("def f(): pass", "failed", ["expected a function"]),
    (lambda S: S.sum(), "failed", ["cannot be called as contrastive_loss(S, pos, neg, lam=0.5)"]),
    (lambda S, pos, neg, lam=0.5: 1 / 0, "failed", ["ZeroDivisionError", "line"]),
    (lambda S, pos, neg, lam=0.5: S[99], "failed", ["IndexError"]),
    (lambda S, pos, neg, lam=0.5: None, "failed", ["NoneType"]),
    (lambda S, pos, neg, lam=0.5: S.numpy(), "failed", ["ndarray"]),
    (lambda S, pos, neg, lam=0.5: S.sum(1), "failed", ["shape (5,)", "scalar"]),
    (lambda S, pos, neg, lam=0.5: 0.0, "failed", ["Python float"]),
], ids=["placeholder", "none", "int", "str", "arity", "zerodivision", "index", "returns-none",
        "numpy", "shape", "float"])
def test_garbage_is_reported_not_raised(answer, status, words):
    result = _check("contrastive_loss", answer)
    assert result.status == status
    for word in words:
        assert word in result.text, (word, result.text)


def test_placeholders_of_every_kind():
    for name in NAMES:
        ex = exercises.get(name)
        answer = placeholder_any if ex.kind == "implement" else ...
        result = _check(name, answer)
        assert result.status == "not implemented", (name, result.text)
        assert "Traceback" not in result.text


def test_garbage_for_streamed_exercises():
    assert "returned a NoneType" not in _check("lse_update", lambda m, acc, z: None).text
    text = _check("lse_update", lambda m, acc, z: 5).text
    assert "after tile 1 your function returned a int" in text
    text = _check("fifo_enqueue", lambda *a: a[0]).text
    assert "after batch 1 your function returned a tensor" in text
    assert "cannot be called" in _check("fifo_enqueue", lambda memory, emb: 0).text


def test_unknown_names_hints_and_descriptions():
    assert _check("no_such_exercise", placeholder).status == "failed"
    assert "available" in str(exercises.hint("nope"))
    first, last = exercises.hint("triplet_loss", 1), exercises.hint("triplet_loss", 99)
    assert str(first).startswith("Hint 1/3 for triplet_loss") and "hint('triplet_loss', 2)" \
        in str(first)
    assert str(last).startswith("Hint 3/3") and "last hint" in str(last)
    assert "Hint 1/3" in str(exercises.hint("triplet_loss", "x"))
    text = str(exercises.describe("recall_at_k"))
    assert "recall_at_k(D, labels, k)" in text and "notebook 08" in text
    with pytest.raises(KeyError):
        exercises.solution("nope")


def test_check_leaves_the_global_random_state_and_grad_mode_alone():
    state = torch.random.get_rng_state()
    with torch.no_grad():
        assert _check("triplet_loss", exercises.solution("triplet_loss")).passed
    assert torch.equal(state, torch.random.get_rng_state())


def test_inputs_changed_in_place_are_reported():
    def masks_edit_labels(labels):
        labels[0] = labels[1]
        return exercises.solution("pair_masks")(labels)

    text = _check("pair_masks", masks_edit_labels).text
    assert "changed its input labels in place" in text


# ----------------------------------------------------------------------------- predictions
@pytest.mark.parametrize(("name", "answer", "passed", "words"), [
    ("triplet_categories", ["Hard", "semihard", "easy"], True, []),
    ("triplet_categories", ["hard", "easy", "easy"], False, ["2 of 3 right"]),
    ("triplet_categories", "hard", False, ["list of three"]),
    ("triplet_categories", ["hard", "medium", "easy"], False, ["'medium' is not"]),
    ("vthm_kept", [(0, 3), (3, 0)], True, []),
    ("vthm_kept", [(0, 3)], False, ["1 kept pair(s) missing"]),
    ("vthm_kept", 7, False, ["list of (i, j)"]),
    ("recall_saturates", "Recall@1", True, []),
    ("recall_saturates", "map@r", False, ["MAP@R asks"]),
    ("dense_memory_gib", 16, True, []),
    ("dense_memory_gib", 17.18, False, ["GB"]),
    ("dense_memory_gib", "lots", False, ["number"]),
    ("xbm_pointer", (10, 2), True, []),
    ("xbm_pointer", (12, 12), False, ["exceed"]),
    ("contrastive_weights", [0, 1, 1], True, []),
    ("contrastive_weights", [0.2, 0.6, 0.9], False, ["hinge"]),
    ("control_probe", 0.52, True, []),
    ("control_probe", 50, True, []),
    ("control_probe", 1.0, False, ["coin"]),
    ("control_probe", "high", False, ["number"]),
    ("synthetic_positive_landing", [2, 0], True, []),
    ("synthetic_positive_landing", (1.5, 0.0), False, ["midpoint"]),
    ("synthetic_positive_landing", (1.0, 0.0), False, ["larger weight"]),
    ("synthetic_positive_landing", 2.0, False, ["two numbers"]),
])
def test_predictions(name, answer, passed, words):
    result = _check(name, answer)
    assert result.passed == passed, result.text
    for word in words:
        assert word in result.text


def test_experiments_reveal_the_direction_only_after_an_answer():
    assert _check("epsilon_experiment", "").status == "not implemented"
    assert "more negatives are kept" not in _check("epsilon_experiment", ...).text
    result = _check("epsilon_experiment", "fewer, I think")
    assert result.status == "noted" and "more negatives are kept" in result.text
    assert _check("chunk_experiment", 42).status == "failed"
    for name, words in (("scale_experiment", "the attention flattens"),
                        ("lambda1_experiment", "toward the real positive")):
        assert words not in _check(name, ...).text
        assert words in _check(name, "no idea").text


# ----------------------------------------------------------------------------- references
def test_metric_cases_agree_with_brute_force_loops():
    """The expected Recall@K / MAP@R (dmlkit.evaluate on the embeddings) are the brute-force
    metrics of the distance matrix's embeddings, ties by index included."""
    for label, x, labels, _ in ex_metrics._embedded(21) + ex_metrics._embedded(31):
        ref = naive.brute_force_metrics(x.numpy(), labels.numpy(), ks=(1, 2, 3))
        for k in (1, 2, 3):
            D = ex_metrics.distance_matrix(x)
            assert exercises.solution("recall_at_k")(D, labels, k) == pytest.approx(
                ref[f"recall@{k}"], abs=1e-12), label
        assert exercises.solution("map_at_r")(D, labels) == pytest.approx(ref["map@r"],
                                                                         abs=1e-12), label


def test_prediction_answers_come_from_dmlkit():
    assert predictions._vthm_expected() == {(0, 3), (3, 0)}
    assert predictions._xbm_expected() == (10, 2)
    assert np.isclose(exercises.solution("dense_memory_gib"), 16.0)
    assert ex_adversarial._sp_expected() == pytest.approx((2.0, 0.0), abs=1e-6)


# ----------------------------------------------------------------------------- the notebooks
@pytest.mark.parametrize("stem", ["01_contrastive_and_triplet", "02_lifted_structure_and_npair",
                                  "03_unified_weight_view", "04_multi_similarity_ablation",
                                  "05_soft_mining_and_attention",
                                  "06_adversarial_hard_negatives", "07_synthetic_positives",
                                  "08_evaluation_metrics", "11_batches_beyond_memory",
                                  "12_memory_and_proxies"])
@pytest.mark.parametrize("solutions", [False, True], ids=["exercises", "solutions"])
def test_notebook_exercise_cells(stem, solutions):
    """The exercise cells of a notebook (the student's cells, then the checks), run alone:
    untouched, every check says "not implemented yet"; with SOLUTIONS every one passes."""
    from dmlkit.nbrun import build_notebook
    from nbtest import NOTEBOOKS

    cells = [c.source for c in build_notebook(NOTEBOOKS / f"{stem}.py").cells
             if c.cell_type == "code"]
    parameters = next(c for c in cells if "SOLUTIONS = False" in c)
    student = [c for c in cells if "# your " in c and "exercises.check" not in c]
    checks = [c for c in cells if "exercises.check(" in c]
    assert 2 <= len(checks) <= 4 and len(student) == len(checks)
    namespace = {"exercises": exercises}
    exec(parameters.replace("SOLUTIONS = False", f"SOLUTIONS = {solutions}"), namespace)
    for code in student:
        exec(code, namespace)
    for code in checks:
        *setup, last = code.strip().splitlines()
        exec("\n".join(setup), namespace)
        result = eval(last, namespace)
        if solutions:
            assert result.status in ("passed", "noted"), result.text
        else:
            assert result.status == "not implemented", result.text


def test_every_exercise_is_placed_in_its_notebook():
    """Each exercise of the catalogue has its check cell in the notebook it names, once, after
    the cell where the student writes the answer."""
    from nbtest import sources

    by_prefix = {p.stem[:2]: p.read_text() for p in sources()}
    for name in NAMES:
        text = by_prefix[exercises.get(name).notebook]
        call = f'exercises.check("{name}", '
        assert text.count(call) == 1, name
        assert "# your " in text[:text.index(call)], name

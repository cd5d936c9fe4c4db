"""dmlkit.train.embedding: the notebooks' small runs (deterministic, logged per step)."""

import naive
import pytest
import torch

from dmlkit import tasks, train


@pytest.fixture(scope="module")
def tiny_task():
    return tasks.image_task("glyphs", num_classes=6, num_test_classes=4, images_per_class=6,
                            size=12, difficulty=0.2)


def test_train_embedding_deterministic_and_logged(tiny_task):
    kw = dict(steps=6, P=3, K=2, log_every=2, track_mining=True, snapshot_steps=(0, 6))
    run = train.train_embedding(tiny_task, "multi_similarity", **kw)
    again = train.train_embedding(tiny_task, "multi_similarity", **kw)
    assert run.scores == again.scores
    assert list(run.history.step) == [0, 2, 4, 5]
    assert run.history[["pos_kept", "neg_kept"]].stack().between(0, 1).all()
    assert set(run.snapshots) == {0, 6}
    S, W, pos, neg = run.snapshots[6]
    assert S.shape == W.shape == pos.shape == (6, 6) and (W[~(pos | neg)] == 0).all()
    # the final scores are those of the returned model (a naive per-query loop)
    z_final = tasks.embed(run.model, tiny_task.X_test).detach().double().numpy()
    ref = naive.brute_force_metrics(z_final, tiny_task.y_test.numpy(),
                                    metrics=("recall", "map@r"), ks=(1,))
    assert run.scores == {k: pytest.approx(ref[k], abs=1e-6) for k in ("recall@1", "map@r")}
    # the untrained scores are those of build_net(seed) embeddings
    z = tasks.embed(tasks.build_net(seed=0), tiny_task.X_test)
    assert run.initial_scores == tasks.retrieval_scores(z, tiny_task.y_test)
    with pytest.raises(ValueError, match="labels"):
        train.train_embedding(tiny_task, "binomial", steps=1, labels=torch.zeros(3))

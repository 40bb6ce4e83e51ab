"""Matrix factorisation baselines from `implicit` (the maintained library for them): ALS with
confidence weighting (Hu, Koren & Volinsky 2008) and BPR (Rendle et al. 2009), behind the same
`fit(split)` / `score(histories)` shape as the other recommenders (see `baselines`).

`score` takes arbitrary histories (a known user's training positives, or recent items sent to
the service), so user factors are always computed from the history, never looked up by user id:
- ALS: implicit's own exact fold-in, `recalculate_user` (the least-squares user step of ALS
  against the fitted item factors, with the same confidence `1 + alpha * x`).
- BPR: implicit has no fold-in for BPR, so it is written here: the user vector maximising BPR's
  own objective with the item factors (and item biases) fixed, mean log σ(u·(v_i - v_j) +
  b_i - b_j) - regularization/2 ·|u|², over the history's items i and `negatives` items j per
  positive drawn uniformly from the items outside the history; the problem is convex in u and
  solved with L-BFGS (scipy). The sampling generator is seeded by `seed` afresh for every
  history, so a history's scores do not depend on what else is in the batch.
Items without a training positive get zero factors (and bias) and rank below every item with
one (baselines.rank_cold_last): a factor model cannot recommend them (cold start).

Threads: `num_threads=1` by default: BPR's SGD is Hogwild across threads (not reproducible
with more), and the machine's cores are shared. OpenBLAS is limited to one thread around
implicit's calls, as implicit asks (its own threads do the work; a BLAS pool on top of them
slows them down).
Leaves out: GPU training (implicit.gpu), the hyper-parameter search (baselines.choose_on_validation
over `ALS.GRID` / `BPR.GRID`), ranking (protocol).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from threadpoolctl import threadpool_limits

from core.foundation.errors import UserError
from solutions.recsys.baselines import History, rank_cold_last, user_item_matrix
from solutions.recsys.protocol import RankingSplit


def _grid(**axes) -> list[dict]:
    """Every combination of the axes, first values first (cheaper settings win ties)."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def _check_positive(model: str, **values) -> None:
    for key, value in values.items():
        if value <= 0:
            raise UserError(f"{model} {key}={value}: must be > 0")


class ALS:
    """implicit's conjugate-gradient ALS on the binary matrix, confidence 1 + alpha * x."""

    name = "ALS (implicit)"
    # ml-latest-small chose factors 32, regularization 1, alpha 1 from (32-128, 0.1-1, 1-40), so the grid
    # went one step past those edges; it now chooses 128 / 10 / 1 / 30, still on edges: widen for your data
    GRID = _grid(factors=(16, 32, 64, 128), regularization=(0.1, 1.0, 10.0), alpha=(1.0, 4.0, 10.0, 40.0),
                 iterations=(15, 30))
    random = True  # results depend on the seed: report several

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 10.0, iterations: int = 15,
                 seed: int = 0, num_threads: int = 1):
        _check_positive("ALS", factors=factors, regularization=regularization, alpha=alpha, iterations=iterations)
        self.params = {"factors": factors, "regularization": regularization, "alpha": alpha, "iterations": iterations}
        self.seed, self.num_threads = seed, num_threads

    def fit(self, split: RankingSplit) -> "ALS":
        from implicit.cpu.als import AlternatingLeastSquares  # lazy: native extension (~0.5 s), for fits only

        self.items, self.item_index = split.items, split.item_index
        matrix = user_item_matrix([split.history(u) for u in split.train], self.item_index, len(self.items))
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(**self.params, random_state=self.seed, num_threads=self.num_threads)
            self.model.fit(matrix, show_progress=False)
        self.active = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
        cold = np.ones(len(self.items), dtype=bool)
        cold[self.active] = False
        self.model.item_factors[cold] = 0.0  # before YtY is cached: the fold-in uses it
        self.model._YtY = None
        return self

    @classmethod
    def from_factors(cls, item_factors: np.ndarray, items: list[str], active: np.ndarray, params: dict, *,
                     seed: int = 0, num_threads: int = 1) -> "ALS":
        """A fitted ALS from saved item factors (a served index): folds users in exactly as after `fit`."""
        from implicit.cpu.als import AlternatingLeastSquares  # lazy: as in fit

        als = cls(**params, seed=seed, num_threads=num_threads)
        als.items, als.item_index = list(items), {item: i for i, item in enumerate(items)}
        als.active = np.asarray(active, dtype=np.int64)
        with threadpool_limits(1, "blas"):  # implicit checks the BLAS pool when it is built, as in fit
            als.model = AlternatingLeastSquares(**params, random_state=seed, num_threads=num_threads)
        als.model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        return als

    @property
    def item_factors(self) -> np.ndarray:
        return self.model.item_factors

    def user_factors(self, histories: list[History]) -> np.ndarray:
        users = user_item_matrix(histories, self.item_index, len(self.items))
        with threadpool_limits(1, "blas"):
            return self.model.recalculate_user(np.arange(len(histories)), users)

    def score(self, histories: list[History]) -> np.ndarray:
        return rank_cold_last(self.user_factors(histories) @ self.item_factors.T, self.active)


class BPR:
    """implicit's BPR (SGD on sampled triples); user factors of a history by fold-in (module docstring)."""

    name = "BPR (implicit)"
    GRID = _grid(factors=(32, 64, 128), learning_rate=(0.01, 0.05), regularization=(0.001, 0.01),
                 iterations=(100, 300))
    random = True

    def __init__(self, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0, num_threads: int = 1, negatives: int = 10,
                 max_pairs: int = 20_000):
        _check_positive("BPR", factors=factors, learning_rate=learning_rate, regularization=regularization,
                        iterations=iterations, negatives=negatives, max_pairs=max_pairs)
        self.params = {"factors": factors, "learning_rate": learning_rate, "regularization": regularization,
                       "iterations": iterations}
        self.seed, self.num_threads, self.negatives, self.max_pairs = seed, num_threads, negatives, max_pairs

    def fit(self, split: RankingSplit) -> "BPR":
        from implicit.cpu.bpr import BayesianPersonalizedRanking  # lazy: as for ALS

        self.items, self.item_index = split.items, split.item_index
        matrix = user_item_matrix([split.history(u) for u in split.train], self.item_index, len(self.items))
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(**self.params, random_state=self.seed, num_threads=self.num_threads)
            model.fit(matrix, show_progress=False)
        self.active = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
        self._active_set = set(self.active.tolist())
        # implicit keeps the item bias as the last factor (users have a constant 1 there)
        self.vectors = np.zeros((len(self.items), self.params["factors"]), dtype=np.float64)
        self.bias = np.zeros(len(self.items), dtype=np.float64)
        self.vectors[self.active] = model.item_factors[self.active, :-1]
        self.bias[self.active] = model.item_factors[self.active, -1]
        return self

    @classmethod
    def from_factors(cls, item_factors: np.ndarray, items: list[str], active: np.ndarray, params: dict, *,
                     seed: int = 0, num_threads: int = 1, negatives: int = 10, max_pairs: int = 20_000) -> "BPR":
        """A fitted BPR from saved item factors ([items, factors + 1], the bias last: `item_factors`)."""
        bpr = cls(**params, seed=seed, num_threads=num_threads, negatives=negatives, max_pairs=max_pairs)
        bpr.items, bpr.item_index = list(items), {item: i for i, item in enumerate(items)}
        bpr.active = np.asarray(active, dtype=np.int64)
        bpr._active_set = set(bpr.active.tolist())
        factors = np.asarray(item_factors, dtype=np.float64)
        bpr.vectors, bpr.bias = np.ascontiguousarray(factors[:, :-1]), np.ascontiguousarray(factors[:, -1])
        return bpr

    @property
    def item_factors(self) -> np.ndarray:
        """[items, factors + 1] (the last column is the bias), for an inner-product index."""
        return np.hstack([self.vectors, self.bias[:, None]]).astype(np.float32)

    def user_factors(self, histories: list[History]) -> np.ndarray:
        """[users, factors + 1], the last column 1 (it multiplies the item bias)."""
        out = np.zeros((len(histories), self.params["factors"] + 1), dtype=np.float32)
        out[:, -1] = 1.0
        for row, history in enumerate(histories):
            positives = sorted({self.item_index[i] for i, _ in history if i in self.item_index} & self._active_set)
            if positives:
                out[row, :-1] = self._fold_in(np.asarray(positives), np.random.default_rng(self.seed))
        return out

    def _fold_in(self, positives: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        candidates = np.setdiff1d(self.active, positives, assume_unique=True)
        if len(candidates) == 0:
            return np.zeros(self.params["factors"])
        pos = np.repeat(positives, self.negatives)
        if len(pos) > self.max_pairs:
            pos = rng.choice(pos, self.max_pairs, replace=False)
        neg = candidates[rng.integers(0, len(candidates), len(pos))]
        diff, offset = self.vectors[pos] - self.vectors[neg], self.bias[pos] - self.bias[neg]
        reg = self.params["regularization"]

        def loss(u):
            margin = diff @ u + offset
            grad = -(diff.T @ expit(-margin)) / len(margin) + reg * u
            return np.logaddexp(0.0, -margin).mean() + 0.5 * reg * u @ u, grad

        return minimize(loss, np.zeros(diff.shape[1]), jac=True, method="L-BFGS-B",
                        options={"maxiter": 200}).x

    def score(self, histories: list[History]) -> np.ndarray:
        return rank_cold_last((self.user_factors(histories) @ self.item_factors.T).astype(np.float32), self.active)

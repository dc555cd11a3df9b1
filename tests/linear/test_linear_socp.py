"""SimplexSOCP (docs/linear_agents.md, RSLUCB-QVI): the fast path against an independent cvxpy solve and brute force."""

from __future__ import annotations

import itertools
import warnings

import cvxpy as cp
import numpy as np
import pytest

from sb3_safe.linear import socp
from sb3_safe.linear.socp import SimplexSOCP, psd_sqrt

TAU = 0.5
KINDS = ("generic", "low_rank", "realistic", "equality", "flat", "tight")


def _instances(n: int, n_states: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Random per-state problems of every kind, cycling through KINDS; e_{a0} is always feasible.

    generic: full-rank Rb; low_rank: rank n - 2 (at least 1); realistic: Rb e_{a0} = 0 exactly, g[a0] < tau;
    equality: Rb e_{a0} = 0 and g[a0] = tau (the six Frozen Lake states); flat: also a second null direction of Rb
    along which g is constant (Frozen Lake's corners); tight: the greedy vertex misses tau by 1e-6 .. 1e-3.
    """
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.0, 1.0, (n_states, n))
    rb = np.zeros((n_states, n, n))
    q = rng.normal(size=(n_states, n))
    safe = rng.integers(0, n, n_states)
    kinds = [KINDS[s % len(KINDS)] for s in range(n_states)]
    for s, kind in enumerate(kinds):
        a0, rank = safe[s], (max(1, n - 2) if kind == "low_rank" else n)
        x = rng.normal(size=(n, rank))
        if kind in ("realistic", "equality", "flat", "tight"):
            x[a0] = 0.0
        if kind == "flat" and n >= 3:
            # Rb z = 0 and g^T z = 0 for z = (e_b + e_c) / 2 - e_{a0}: the mixture of b and c costs what a0 costs
            b, c = [a for a in range(n) if a != a0][:2]
            x[c] = -x[b]
            g[s, a0] = 0.5 * (g[s, b] + g[s, c])
        rb[s] = rng.uniform(0.1, 1.5) * psd_sqrt(x @ x.T)
        if kind in ("realistic", "equality", "flat", "tight"):
            rb[s, a0, :] = rb[s, :, a0] = 0.0
        if kind == "equality":
            g[s, a0] = TAU
        elif kind == "flat":
            g[s] += TAU * rng.uniform(0.2, 0.9) - g[s, a0]  # shift: keeps g^T z = 0, g[a0] < tau
        else:
            g[s, a0] = min(g[s, a0], TAU * rng.uniform(0.0, 0.95))
        if kind != "flat":  # e_{a0} feasible, strictly unless Rb e_{a0} = 0
            g[s, a0] = min(g[s, a0], TAU - np.linalg.norm(rb[s, :, a0]) * rng.uniform(1.01, 1.5))
        if kind == "tight":
            best = int(np.argmax(q[s]))
            if best != a0:
                g[s, best] = TAU - np.linalg.norm(rb[s, :, best]) + 10.0 ** rng.uniform(-6, -3)
    return g, rb, q, safe, kinds


def _reference(g: np.ndarray, rb: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Optimal values from cvxpy/Clarabel at tight tolerances, one fresh problem per state (no socp code involved)."""
    values = np.empty(len(q))
    for s in range(len(q)):
        theta = cp.Variable(q.shape[1], nonneg=True)
        cons = [cp.sum(theta) == 1, g[s] @ theta + cp.norm(rb[s] @ theta, 2) <= TAU]
        problem = cp.Problem(cp.Maximize(q[s] @ theta), cons)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        assert problem.status in ("optimal", "optimal_inaccurate"), (s, problem.status)
        values[s] = problem.value
    return values


def _assert_feasible(theta: np.ndarray, g: np.ndarray, rb: np.ndarray, safe: np.ndarray, tau: float = TAU) -> None:
    """theta on the simplex and, except at the analytic safe vertex, g^T theta + ||Rb theta|| <= tau + 1e-12 scale."""
    assert (theta >= 0).all()
    np.testing.assert_allclose(theta.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    cost = np.einsum("sa,sa->s", g, theta) + np.linalg.norm(np.einsum("sab,sb->sa", rb, theta), axis=1)
    scale = np.maximum.reduce([np.ones(len(g)), np.abs(g).max(1), np.linalg.norm(rb, axis=1).max(1)])
    at_safe = (theta == np.eye(g.shape[1])[safe]).all(axis=1)
    assert (at_safe | (cost <= tau + 1e-12 * scale)).all(), (cost - tau)[~at_safe].max()


def _face_w(g: np.ndarray, rb: np.ndarray, support: np.ndarray) -> np.ndarray:
    """W = Bf^T Bf - cf cf^T of the face with this support (orthonormal basis of {1}^perp from a QR)."""
    k = len(support)
    basis = np.linalg.qr(np.eye(k) - 1.0 / k)[0][:, : k - 1]
    bf, cf = rb[:, support] @ basis, basis.T @ g[support]
    return bf.T @ bf - np.outer(cf, cf)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_fast_matches_cvxpy_and_is_feasible(n):
    g, rb, q, safe, _ = _instances(n, 60, seed=n)
    sol = SimplexSOCP(g, rb, TAU, safe).solve(q)
    reference = _reference(g, rb, q)
    np.testing.assert_allclose(sol.value, reference, rtol=0, atol=1e-6)
    assert (sol.value <= reference + 1e-6).all()
    np.testing.assert_allclose(sol.value, np.einsum("sa,sa->s", q, sol.theta), rtol=0, atol=1e-12)
    _assert_feasible(sol.theta, g, rb, safe)
    assert sol.greedy + sol.face + sol.cvxpy == 60
    assert sol.cvxpy == 0 and sol.fallbacks_to_safe == 0  # the exact path resolved every state
    assert sol.face >= 20  # many greedy vertices are infeasible
    assert sol.max_violation <= 1e-12 * (1 + np.abs(rb).sum(axis=(1, 2)).max())


def test_instances_cover_indefinite_w_and_interior_optima():
    """The optima above include points inside faces whose W is indefinite (both signs of eigenvalues)."""
    indefinite = interior = 0
    for n in (3, 4, 5):
        g, rb, q, safe, _ = _instances(n, 60, seed=n)
        theta = SimplexSOCP(g, rb, TAU, safe).solve(q).theta
        for s in range(len(q)):
            support = np.flatnonzero(theta[s] > 1e-9)
            if len(support) >= 2:
                interior += 1
                eig = np.linalg.eigvalsh(_face_w(g[s], rb[s], support))
                indefinite += int(eig.min() < -1e-9 < 1e-9 < eig.max())
    assert interior >= 60
    assert indefinite >= 10


def test_reference_solver_agrees_with_fast_path():
    g, rb, q, safe, kinds = _instances(4, 24, seed=11)
    keep = np.array([kind != "equality" for kind in kinds])  # Slater's condition fails at g[a0] = tau
    fast = SimplexSOCP(g[keep], rb[keep], TAU, safe[keep]).solve(q[keep])
    ref = SimplexSOCP(g[keep], rb[keep], TAU, safe[keep], solver="cvxpy").solve(q[keep])
    assert (ref.cvxpy, ref.greedy, ref.face, ref.fallbacks_to_safe) == (keep.sum(), 0, 0, 0)
    np.testing.assert_allclose(fast.value, ref.value, rtol=0, atol=1e-6)
    _assert_feasible(ref.theta, g[keep], rb[keep], safe[keep])
    assert socp._reference_problem(4) is socp._reference_problem(4)  # compiled once per n, shared
    assert socp._reference_problem(4).problem.is_dcp(dpp=True)


@pytest.mark.parametrize(("n", "steps"), [(2, 20000), (3, 400)])
def test_fast_matches_brute_force_on_a_grid(n, steps):
    g, rb, q, safe, _ = _instances(n, 24, seed=100 + n)
    sol = SimplexSOCP(g, rb, TAU, safe).solve(q)
    grid = np.array([c for c in itertools.product(range(steps + 1), repeat=n - 1) if sum(c) <= steps], dtype=float)
    grid = np.column_stack([grid, steps - grid.sum(axis=1)]) / steps  # every point of the simplex with step 1/steps
    for s in range(len(q)):
        cost = grid @ g[s] + np.linalg.norm(grid @ rb[s].T, axis=1)
        feasible = (cost <= TAU) | (grid == np.eye(n)[safe[s]]).all(axis=1)
        best = (grid[feasible] @ q[s]).max()
        assert best <= sol.value[s] + 1e-9  # no feasible grid point beats the solver
        assert sol.value[s] - best <= 0.05 * np.ptp(q[s])  # and the solver is within grid resolution of the best


def test_apex_of_a_rank_deficient_cone_is_found_without_cvxpy():
    """Rb theta = 0 and g^T theta = tau at theta = (1/3, 1/3, 1/3): the optimum is the cone's apex, not a stationary
    point of any face."""
    g, rb, q = np.array([[0.0, 1.6, 1.4]]), (np.eye(3) - 1.0 / 3)[None], np.array([[0.0, 1.0, 1.05]])
    sol = SimplexSOCP(g, rb, 1.0, np.array([0])).solve(q)
    np.testing.assert_allclose(sol.theta[0], np.full(3, 1.0 / 3), atol=1e-12)
    assert (sol.face, sol.cvxpy) == (1, 0)


def test_singular_w_falls_back_to_cvxpy():
    """||Rb e_1|| = |g_1 - g_0| makes W = 0 on the edge (the constraint is linear there, 2 theta_1 <= 1/2)."""
    g, rb, q = np.array([[0.0, 1.0]]), np.array([[[0.0, 0.0], [0.0, 1.0]]]), np.array([[0.0, 1.0]])
    sol = SimplexSOCP(g, rb, 0.5, np.array([0])).solve(q)
    assert (sol.greedy, sol.face, sol.cvxpy, sol.fallbacks_to_safe) == (0, 0, 1, 0)
    np.testing.assert_allclose(sol.theta[0], [0.75, 0.25], atol=1e-7)
    _assert_feasible(sol.theta, g, rb, np.array([0]), tau=0.5)


def test_screening_returns_the_feasible_greedy_vertex_exactly():
    g, rb, _, safe, _ = _instances(4, 30, seed=5)
    rng = np.random.default_rng(6)
    q = rng.normal(size=(30, 4))
    best = q.argmax(axis=1)
    g[np.arange(30), best] = -1.0  # with Rb shrunk, every greedy vertex is feasible
    rb *= 0.1
    assert (g[np.arange(30), best] + np.linalg.norm(rb[np.arange(30), :, best], axis=1) < TAU).all()
    sol = SimplexSOCP(g, rb, TAU, safe).solve(q)
    assert (sol.greedy, sol.face, sol.cvxpy) == (30, 0, 0)
    assert np.array_equal(sol.theta, np.eye(4)[best])
    np.testing.assert_array_equal(sol.value, q.max(axis=1))


def test_ties_go_to_the_safe_vertex():
    # screened: tied feasible maximisers
    g, rb = np.zeros((2, 3)), np.zeros((2, 3, 3))
    q = np.array([[1.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    sol = SimplexSOCP(g, rb, TAU, np.array([2, 1])).solve(q)
    np.testing.assert_array_equal(sol.theta, [[0, 0, 1], [0, 1, 0]])
    # unscreened: e_2 is infeasible and every mix with it too; e_0, e_1 (and their edge) tie at cost tau
    g, rb = np.array([[TAU, TAU, 10.0]]), np.diag([0.0, 0.0, 1.0])[None]
    sol = SimplexSOCP(g, rb, TAU, np.array([1])).solve(np.array([[1.0, 1.0, 2.0]]))
    assert (sol.face, sol.cvxpy) == (1, 0)
    np.testing.assert_array_equal(sol.theta, [[0, 1, 0]])


@pytest.mark.parametrize("where", ["g", "rb", "q"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_name_the_state(where, bad):
    g, rb, q, safe, _ = _instances(3, 8, seed=1)
    {"g": g, "rb": rb, "q": q}[where][5].flat[1] = bad
    with pytest.raises(ValueError, match="state 5"):
        SimplexSOCP(g, rb, TAU, safe).solve(q)


def test_input_validation():
    g, rb, q, safe, _ = _instances(3, 4, seed=2)
    with pytest.raises(ValueError, match="solver"):
        SimplexSOCP(g, rb, TAU, safe, solver="ecos")
    with pytest.raises(ValueError, match="rb must have shape"):
        SimplexSOCP(g, rb[:, :2], TAU, safe)
    with pytest.raises(ValueError, match="safe_index"):
        SimplexSOCP(g, rb, TAU, np.array([0, 1, 3, 0]))
    g[2, safe[2]] = TAU + 1e-6
    with pytest.raises(ValueError, match="state 2"):
        SimplexSOCP(g, rb, TAU, safe)
    with pytest.raises(ValueError, match="q must have shape"):
        SimplexSOCP(g[:2], rb[:2], TAU, safe[:2]).solve(q)


@pytest.mark.parametrize("solver", ["fast", "cvxpy"])
def test_inactive_states_get_the_safe_vertex_unsolved(solver):
    g, rb, q, safe, _ = _instances(4, 12, seed=3)
    active = np.arange(12) % 3 != 0
    g[~active], rb[~active], q[~active] = np.nan, np.inf, np.nan  # never read
    sol = SimplexSOCP(g, rb, TAU, safe, solver=solver, active=active).solve(q)
    np.testing.assert_array_equal(sol.theta[~active], np.eye(4)[safe[~active]])
    np.testing.assert_array_equal(sol.value[~active], 0.0)
    assert sol.greedy + sol.face + sol.cvxpy == active.sum()
    assert np.isfinite(sol.value[active]).all()


def _break_cvxpy(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Make every cvxpy solve fail: raise, report "infeasible", or report "optimal" with the infeasible vertex e_1."""

    def solve(self, *args, **kwargs):
        if mode == "raise":
            raise cp.error.SolverError("mock failure")
        self.variables()[0].value = np.eye(self.variables()[0].shape[0])[1]

    monkeypatch.setattr(cp.Problem, "solve", solve)
    monkeypatch.setattr(cp.Problem, "status", property(lambda self: "infeasible" if mode == "status" else "optimal"))


FAILURES = [("raise", "mock failure"), ("status", "infeasible"), ("theta", "violates")]


@pytest.mark.parametrize(("mode", "message"), FAILURES)
def test_reference_failure_gives_the_safe_vertex_and_warns(monkeypatch, mode, message):
    g, rb, q, _, _ = _instances(4, 3, seed=4)
    safe = np.zeros(3, dtype=np.int64)
    g[:, 0], rb[:, :, 0], rb[:, 0, :] = 0.1, 0.0, 0.0
    g[:, 1] = 2.0  # e_1 is infeasible
    _break_cvxpy(monkeypatch, mode)
    with pytest.warns(RuntimeWarning, match=f"state 0 .*{message}") as record:
        sol = SimplexSOCP(g, rb, TAU, safe, solver="cvxpy").solve(q)
    assert len(record) == 1  # once per object
    assert (sol.cvxpy, sol.fallbacks_to_safe) == (3, 3)
    np.testing.assert_array_equal(sol.theta, np.eye(4)[safe])
    np.testing.assert_array_equal(sol.value, q[:, 0])


def test_failed_fallback_keeps_the_best_verified_candidate(monkeypatch):
    g, rb, q = np.array([[0.0, 1.0]]), np.array([[[0.0, 0.0], [0.0, 1.0]]]), np.array([[0.0, 1.0]])
    _break_cvxpy(monkeypatch, "raise")
    with pytest.warns(RuntimeWarning, match="state 0"):
        sol = SimplexSOCP(g, rb, 0.5, np.array([0])).solve(q)
    assert (sol.cvxpy, sol.fallbacks_to_safe) == (1, 1)
    # the edge's least-squares apex point (0.75, 0.25) is a verified candidate (and here the optimum): it is kept
    np.testing.assert_allclose(sol.theta, [[0.75, 0.25]], atol=1e-12)
    _assert_feasible(sol.theta, g, rb, np.array([0]), tau=0.5)


def test_psd_sqrt():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 5, 3))
    gram = x @ np.swapaxes(x, 1, 2)  # rank 3, PSD
    root = psd_sqrt(gram)
    np.testing.assert_allclose(root @ root, gram, rtol=0, atol=1e-10 * np.abs(gram).max())
    np.testing.assert_array_equal(root, np.swapaxes(root, 1, 2))
    assert (np.linalg.eigvalsh(root) > -1e-12).all()
    # slightly negative eigenvalues (round-off of a PSD matrix) are clipped, not turned into NaN
    v = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    noisy = v @ np.diag([2.0, 1.0, 0.0, -1e-13]) @ v.T
    root = psd_sqrt(noisy)
    assert np.isfinite(root).all()
    np.testing.assert_allclose(root @ root, v @ np.diag([2.0, 1.0, 0.0, 0.0]) @ v.T, rtol=0, atol=1e-12)
    # an exact null vector stays one to round-off
    gram = np.diag([0.0, 3.0, 1.0])
    gram[1:, 1:] += 0.5
    np.testing.assert_allclose(psd_sqrt(gram)[:, 0], 0.0, atol=1e-15)
    with pytest.raises(ValueError, match="n, n"):
        psd_sqrt(np.ones((2, 3)))

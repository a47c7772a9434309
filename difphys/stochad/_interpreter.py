"""A forward-mode interpreter over jaxprs that threads an estimator state through the program.

The user's program ``f(theta, key)`` is traced once to a jaxpr. This interpreter re-evaluates
that jaxpr equation by equation, carrying for every value its primal and (optionally) its
tangent along one direction of ``theta``. Two things differ from ``jax.jvp``:

1. every discrete draw (a jitted sampler whose name starts with ``SAMPLER_PREFIX``) is handed
   to a *rule* that sees the draw's parameters and their tangents and may update a state, and
2. that state is threaded through ``lax.while_loop``, ``lax.scan``, ``lax.cond`` and nested
   jits, so that draws inside loops whose trip count depends on earlier draws are handled.

Equations that contain no discrete draw are bound as they are (with ``jax.jvp`` when an input
carries a tangent), so the interpreted program compiles to the same XLA as the original.
"""

from __future__ import annotations

import functools

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

from ._distributions import DISTRIBUTIONS, SAMPLER_PREFIX

_CALL_PRIMITIVES = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}


def sampler_name(eqn) -> str | None:
    """The distribution name when ``eqn`` is a difphys discrete draw, else None."""
    if eqn.primitive.name in ("jit", "pjit"):
        name = str(eqn.params.get("name", ""))
        if name.startswith(SAMPLER_PREFIX):
            return name[len(SAMPLER_PREFIX) :]
    return None


def _open(j):
    """(Jaxpr, consts) of a Jaxpr or ClosedJaxpr."""
    if isinstance(j, jcore.ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


@functools.lru_cache(maxsize=4096)
def _has_draws_cached(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if sampler_name(eqn) is not None:
            return True
        for sub in jcore.jaxprs_in_params(eqn.params):
            if _has_draws_cached(_open(sub)[0]):
                return True
    return False


def has_draws(j) -> bool:
    """Whether a (closed) jaxpr contains a discrete draw anywhere, including nested jaxprs."""
    return _has_draws_cached(_open(j)[0])


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _bind(eqn, invals):
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _clean_tangent(t):
    if t is None or t.dtype == jax.dtypes.float0:
        return None
    return t


def _instantiate(vals, tans, mask=None):
    """Zero tangents for floating values selected by ``mask`` (default: all of them).

    Loop carries and branch outputs need the same tangent structure on every iteration or
    branch; ``mask`` says which of them can ever carry a tangent.
    """
    if mask is None:
        mask = [True] * len(vals)
    return [
        (t if t is not None else jnp.zeros_like(v)) if (_is_float(v) and m) else None
        for v, t, m in zip(vals, tans, mask, strict=True)
    ]


def _has_tangent(ts):
    return [t is not None for t in ts]


def _carry_mask(step, init_mask, n_iter=64):
    """Fixed point of "this carry can carry a tangent" for a loop body (traced abstractly).

    ``step(mask) -> list[bool]`` says which outputs have tangents when the carries in ``mask``
    have them; the result is the smallest mask closed under ``step``.
    """
    mask = list(init_mask)
    for _ in range(n_iter):
        new = [a or b for a, b in zip(mask, step(mask), strict=True)]
        if new == mask:
            return mask
        mask = new
    raise RuntimeError("difphys.stochad: tangent structure of a loop did not converge")


class Interpreter:
    """Evaluate a jaxpr with tangents and a threaded state; subclasses define ``draw``.

    ``draw(dist, key, params, dparams, state, shape) -> (value, tangent, state)`` is called for
    every discrete draw (``shape``: the draw's output shape); ``dparams`` holds the parameters' tangents (None when a parameter does not
    depend on theta, or when the interpreter carries no tangents).
    """

    tangents: bool = True

    def draw(self, dist, key, params, dparams, state, shape):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def eval(self, jaxpr, consts, args, arg_tans, state):
        env: dict = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return v.val, None
            return env[v]

        def write(v, val, tan):
            env[v] = (val, tan if self.tangents else None)

        for v, c in zip(jaxpr.constvars, consts, strict=True):
            write(v, c, None)
        for v, a, t in zip(jaxpr.invars, args, arg_tans, strict=True):
            write(v, a, t)
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            vals = [x for x, _ in ins]
            tans = [t for _, t in ins]
            outs, out_tans, state = self._eqn(eqn, vals, tans, state)
            for v, x, t in zip(eqn.outvars, outs, out_tans, strict=True):
                write(v, x, t)
        outs = [read(v) for v in jaxpr.outvars]
        return [x for x, _ in outs], [t for _, t in outs], state

    def _eqn(self, eqn, vals, tans, state):
        name = sampler_name(eqn)
        if name is not None:
            return self._draw_eqn(name, eqn, vals, tans, state)
        prim = eqn.primitive.name
        subs = jcore.jaxprs_in_params(eqn.params)
        if subs and any(has_draws(s) for s in subs):
            if prim in _CALL_PRIMITIVES:
                inner, consts = _open(eqn.params[_CALL_PRIMITIVES[prim]])
                return self.eval(inner, consts, vals, tans, state)
            if prim == "while":
                return self._while(eqn, vals, tans, state)
            if prim == "scan":
                return self._scan(eqn, vals, tans, state)
            if prim == "cond":
                return self._cond(eqn, vals, tans, state)
            raise NotImplementedError(
                f"difphys.stochad: discrete draws inside the primitive {prim!r} are not supported "
                "(supported: jit, lax.cond/switch, lax.while_loop/fori_loop, lax.scan, vmap, "
                "custom_jvp/custom_vjp functions)"
            )
        return self._plain(eqn, vals, tans, state)

    def _plain(self, eqn, vals, tans, state):
        nout = len(eqn.outvars)
        idx = [i for i, t in enumerate(tans) if t is not None] if self.tangents else []
        if not idx:
            return _bind(eqn, vals), [None] * nout, state

        def fn(*diff):
            args = list(vals)
            for i, d in zip(idx, diff, strict=True):
                args[i] = d
            return _bind(eqn, args)

        outs, out_tans = jax.jvp(fn, [vals[i] for i in idx], [tans[i] for i in idx])
        return list(outs), [_clean_tangent(t) for t in out_tans], state

    def _draw_eqn(self, name, eqn, vals, tans, state):
        dist = DISTRIBUTIONS[name]
        key, params = vals[0], vals[1:]
        dparams = tans[1:] if self.tangents else [None] * len(params)
        x, t, state = self.draw(dist, key, params, dparams, state, eqn.outvars[0].aval.shape)
        return [x], [t], state

    # ------------------------------------------------------------------ control flow
    def _while(self, eqn, vals, tans, state):
        p = eqn.params
        cj, bj = p["cond_jaxpr"], p["body_jaxpr"]
        if has_draws(cj):
            raise NotImplementedError(
                "difphys.stochad: discrete draws in a while_loop's condition are not supported; "
                "draw in the body and carry the result"
            )
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts = vals[:cn]
        bconsts, bconst_t = vals[cn : cn + bn], tans[cn : cn + bn]
        init = vals[cn + bn :]
        b_jaxpr, b_consts = _open(bj)
        init_t = tans[cn + bn :] if self.tangents else [None] * len(init)

        def body_eval(x, t, s):
            return self.eval(b_jaxpr, b_consts, [*bconsts, *x], [*bconst_t, *t], s)

        mask = [False] * len(init)
        if self.tangents:

            def probe(mask):
                t0 = _instantiate(init, init_t, mask)
                return _has_tangent(self._probe_out_tangents(body_eval, init, t0, state))

            mask = _carry_mask(
                probe, [t is not None and _is_float(x) for x, t in zip(init, init_t, strict=True)]
            )
            init_t = _instantiate(init, init_t, mask)

        def cond_fun(carry):
            x, _, _ = carry
            return jcore.jaxpr_as_fun(cj)(*cconsts, *x)[0]

        def body_fun(carry):
            x, t, s = carry
            outs, out_t, s = body_eval(x, t, s)
            out_t = _instantiate(outs, out_t, mask) if self.tangents else [None] * len(outs)
            return outs, out_t, s

        x, t, state = jax.lax.while_loop(cond_fun, body_fun, (list(init), init_t, state))
        return list(x), list(t), state

    @staticmethod
    def _probe_out_tangents(fn, *args):
        """Which output tangents ``fn(*args)[1]`` produces, found by abstract tracing."""
        found = []

        def run(*a):
            outs, out_t, _ = fn(*a)
            found[:] = _has_tangent(out_t)
            return outs

        jax.eval_shape(run, *args)
        return [object() if f else None for f in found]

    def _scan(self, eqn, vals, tans, state):
        p = eqn.params
        nc, ncarry = p["num_consts"], p["num_carry"]
        j, j_consts = _open(p["jaxpr"])
        consts, consts_t = vals[:nc], tans[:nc]
        init = vals[nc : nc + ncarry]
        init_t = tans[nc : nc + ncarry] if self.tangents else [None] * ncarry
        xs, xs_t = vals[nc + ncarry :], tans[nc + ncarry :]

        def body_eval(c, ct, xv, xt, s):
            return self.eval(j, j_consts, [*consts, *c, *xv], [*consts_t, *ct, *xt], s)

        mask = [False] * ncarry
        if self.tangents:
            x0 = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in xs]
            xt0 = [None if t is None else jax.ShapeDtypeStruct(t.shape[1:], t.dtype) for t in xs_t]

            def probe(mask):
                ct0 = _instantiate(init, init_t, mask)
                out = self._probe_out_tangents(
                    lambda c, ct, xv, xt, s: body_eval(c, ct, xv, xt, s), init, ct0, x0, xt0, state
                )
                return _has_tangent(out[:ncarry])

            mask = _carry_mask(
                probe, [t is not None and _is_float(x) for x, t in zip(init, init_t, strict=True)]
            )
            init_t = _instantiate(init, init_t, mask)

        def step(carry, x):
            c, ct, s = carry
            xv, xt = x
            outs, out_t, s = body_eval(c, ct, xv, xt, s)
            c_new, ys = outs[:ncarry], outs[ncarry:]
            if self.tangents:
                ct_new = _instantiate(c_new, out_t[:ncarry], mask)
                ys_t = out_t[ncarry:]
            else:
                ct_new, ys_t = [None] * ncarry, [None] * len(ys)
            return (c_new, ct_new, s), (ys, ys_t)

        (c, ct, state), (ys, ys_t) = jax.lax.scan(
            step,
            (list(init), init_t, state),
            (list(xs), list(xs_t)),
            length=p["length"],
            reverse=p["reverse"],
            unroll=p["unroll"],
        )
        return [*c, *ys], [*ct, *ys_t], state

    def _cond(self, eqn, vals, tans, state):
        branches = eqn.params["branches"]
        index, ops, ops_t = vals[0], vals[1:], tans[1:]
        runs = []
        for branch in branches:
            bj, bconsts = _open(branch)
            runs.append(lambda o, ot, s, bj=bj, bconsts=bconsts: self.eval(bj, bconsts, o, ot, s))
        mask = None
        if self.tangents:
            mask = [False] * len(eqn.outvars)
            for run in runs:
                out = self._probe_out_tangents(run, list(ops), list(ops_t), state)
                mask = [a or b for a, b in zip(mask, _has_tangent(out), strict=True)]

        def make(run):
            def branch(operand):
                outs, out_t, s = run(*operand)
                out_t = _instantiate(outs, out_t, mask) if self.tangents else [None] * len(outs)
                return outs, out_t, s

            return branch

        outs, out_t, state = jax.lax.switch(
            index, [make(r) for r in runs], (list(ops), list(ops_t), state)
        )
        return list(outs), list(out_t), state

"""``process(spec)``: MadGraph process syntax -> compiled tree-level processes.

Supported syntax (MadGraph5_aMC@NLO's ``generate``): particle names of the ``sm`` model;
multiparticle labels with MadGraph's defaults (``p = j = g u c d s u~ c~ d~ s~``,
``l+ = e+ mu+``, ``l- = e- mu-``, ``vl = ve vm vt``, ``vl~ = ve~ vm~ vt~``) and ``define``
lines of your own; coupling orders at amplitude level (``QED=2`` and ``QED<=2`` mean at most 2,
``QED==2`` exactly 2; without a QED constraint the lowest ``2 QED + QCD`` that has diagrams is
taken, as MadGraph does); required s-channel particles (``e+ e- > z > mu+ mu-``); exclusions
from every propagator (``/ z``) and from s-channel propagators (``$ z``, ``$$ z``: both remove
the diagrams; MadGraph's single ``$`` instead keeps them and vetoes the on-shell region).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

from ._particles import PARTICLES
from ._process import Process
from ._recursion import evaluate, plan

#: MadGraph's default multiparticle labels (``sm`` model, 4-flavour proton).
MULTIPARTICLES: dict[str, tuple[str, ...]] = {
    "p": ("g", "u", "c", "d", "s", "u~", "c~", "d~", "s~"),
    "j": ("g", "u", "c", "d", "s", "u~", "c~", "d~", "s~"),
    "l+": ("e+", "mu+"),
    "l-": ("e-", "mu-"),
    "vl": ("ve", "vm", "vt"),
    "vl~": ("ve~", "vm~", "vt~"),
}

_ORDER = re.compile(r"^(QCD|QED)(<=|==|=)(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ProcessSpec:
    """A parsed process line: labels (each a tuple of particle names) and options."""

    text: str
    initial: tuple[tuple[str, ...], ...]
    final: tuple[tuple[str, ...], ...]
    orders: tuple[tuple[str, str, int], ...]
    required: frozenset
    excluded: frozenset
    s_excluded: frozenset
    decays: tuple = ()  # ((final-state positions, decaying particle), ...)


class ProcessSet(tuple):
    """The subprocesses of a multiparticle process (a tuple of :class:`Process`), e.g.
    ``process("p p > t t~")``; each subprocess's |M|^2 carries its own symmetry factor.

    ``groups``: ``((representative, member indices), ...)``: subprocesses related by the
    generation symmetry of the ``sm`` model (massless ``u c``, ``d s``, ``e mu`` with CKM = 1:
    ``c c~ > t t~`` is ``u u~ > t t~``) share one compiled |M|^2, as MadGraph groups them;
    cross sections and sampling targets evaluate it once per group.
    """

    def __new__(cls, name, subprocesses, groups=None):
        obj = super().__new__(cls, subprocesses)
        obj.name = name
        obj.groups = groups if groups is not None else tuple(
            (sub, (k,)) for k, sub in enumerate(subprocesses))
        return obj

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self)
        return f"ProcessSet({self.name!r}: {names})"


def _labels(definitions):
    labels = dict(MULTIPARTICLES)
    labels.update(definitions)
    return labels


def _resolve(token, labels, line):
    if token in PARTICLES:
        return (token,)
    if token in labels:
        return labels[token]
    known = " ".join(sorted(PARTICLES))
    raise ValueError(
        f"unknown particle {token!r} in {line!r}; the sm model's particles are: {known}; "
        f"multiparticle labels: {' '.join(sorted(labels))}"
    )


def parse(spec: str, define: dict | None = None) -> ProcessSpec:
    """Parse a process string (``define`` lines separated by newlines or ``;`` may precede it)."""
    if not isinstance(spec, str):
        raise TypeError(f"a process is a MadGraph process string such as 'e+ e- > mu+ mu-'; "
                        f"got {type(spec).__name__} {spec!r}")
    if define is not None and not isinstance(define, dict):
        raise TypeError(f"define must be a dict of multiparticle labels; got {type(define).__name__}")
    definitions: dict[str, tuple[str, ...]] = {}
    for name, members in (define or {}).items():
        definitions[name] = tuple(members.split()) if isinstance(members, str) else tuple(members)
    lines = [x.strip() for x in re.split(r"[;\n]", spec) if x.strip()]
    if not lines:
        raise ValueError("empty process string")
    process_line = None
    for line in lines:
        words = line.split()
        if words[0] == "define":
            body = " ".join(words[1:]).replace("=", " = ").split()
            if len(body) < 3 or body[1] != "=":
                raise ValueError(f"malformed define line {line!r}: expected 'define x = a b c'")
            members = []
            for tok in body[2:]:
                members.extend(_resolve(tok, _labels(definitions), line))
            definitions[body[0]] = tuple(dict.fromkeys(members))
        else:
            if process_line is not None:
                raise ValueError(f"more than one process line in {spec!r}")
            process_line = " ".join(words[1:]) if words[0] == "generate" else line
    if process_line is None:
        raise ValueError(f"no process line in {spec!r}")
    labels = _labels(definitions)
    clauses = [c.strip() for c in process_line.replace("(", " ").replace(")", " ").split(",")]
    process_line, decay_clauses = clauses[0], clauses[1:]
    tokens = process_line.replace(">", " > ").split()
    # re-join 'QED <= 2' style tokens split by spaces
    text = " ".join(tokens)
    text = re.sub(r"\s*(<=|==|=)\s*", r"\1", text)
    tokens = text.split()
    orders, excluded, s_excluded, parts = [], set(), set(), [[]]
    mode = None
    for tok in tokens:
        m = _ORDER.match(tok)
        if m:
            orders.append((m.group(1).upper(), m.group(2), int(m.group(3))))
            continue
        if "^2" in tok or "QCD^" in tok.upper():
            raise NotImplementedError(f"squared coupling orders ({tok!r}) are not supported")
        if tok in ("/", "$", "$$"):
            mode = tok
            continue
        if tok == ">":
            parts.append([])
            mode = None
            continue
        if mode == "/":
            excluded.update(_resolve(tok, labels, process_line))
        elif mode in ("$", "$$"):
            s_excluded.update(_resolve(tok, labels, process_line))
        else:
            parts[-1].append(tok)
    if len(parts) < 2:
        raise ValueError(f"{process_line!r} has no '>': write 'initial > final'")
    initial, *middle, final = parts
    if len(initial) != 2:
        raise ValueError(f"{process_line!r}: exactly two incoming particles are supported")
    if not final:
        raise ValueError(f"{process_line!r} has no final-state particles")
    required = set()
    for group in middle:
        for tok in group:
            required.update(_resolve(tok, labels, process_line))
    final_labels = [_resolve(t, labels, process_line) for t in final]
    # decay chains: replace the first undecayed occurrence of each parent by its products
    expansions = []
    for clause in decay_clauses:
        words = clause.replace(">", " > ").split()
        if len(words) < 4 or words[1] != ">" or ">" in words[2:]:
            raise ValueError(f"malformed decay {clause!r}: expected 'x > a b ...'")
        if any(_ORDER.match(w) or w in ("/", "$", "$$") for w in words):
            raise NotImplementedError(f"options inside a decay ({clause!r}) are not supported")
        parent = words[0]
        if parent not in PARTICLES:
            raise ValueError(f"decaying particle {parent!r} must be a single particle")
        slot = next((k for k, lab in enumerate(final_labels) if lab == (parent,)), None)
        if slot is None:
            raise ValueError(f"decay {clause!r}: no undecayed {parent} in the final state")
        products = [_resolve(t, labels, clause) for t in words[2:]]
        final_labels[slot:slot + 1] = products
        expansions.append((slot, len(products), parent))
    decay_spec = _decay_groups(len(final), expansions)
    return ProcessSpec(
        process_line,
        tuple(_resolve(t, labels, process_line) for t in initial),
        tuple(final_labels),
        tuple(orders),
        frozenset(required),
        frozenset(excluded),
        frozenset(s_excluded),
        decay_spec,
    )


def _decay_groups(n_final: int, expansions) -> tuple:
    """``((final-state positions covered, parent), ...)`` per decay, from the in-place expansions
    ``(slot, number of products, parent)`` applied in order to a final state of ``n_final``."""
    ancestry: list[list[int]] = [[] for _ in range(n_final)]  # enclosing decays of each slot
    for node, (slot, n_products, _) in enumerate(expansions):
        ancestors = ancestry[slot] + [node]
        ancestry[slot:slot + 1] = [list(ancestors) for _ in range(n_products)]
    covered: list[set] = [set() for _ in expansions]
    for position, ancestors in enumerate(ancestry):
        for node in ancestors:
            covered[node].add(position)
    return tuple((tuple(sorted(covered[k])), expansions[k][2]) for k in range(len(expansions)))


def _order_filter(orders):
    """``(accept(qcd, qed), lowest)``: without a QED constraint the lowest WEIGHTED is kept."""
    if not orders:
        return None, True

    def accept(qcd, qed):
        value = {"QCD": qcd, "QED": qed}
        for name, op, n in orders:
            if op == "==" and value[name] != n:
                return False
            if op in ("=", "<=") and value[name] > n:
                return False
        return True

    return accept, not any(name == "QED" for name, _, _ in orders)


def _conserved(names) -> str | None:
    """Why an all-incoming set of particles cannot have a tree diagram (charge, colour)."""
    parts = [PARTICLES[n] for n in names]
    charge = sum(p.electric_charge for p in parts)
    if abs(charge) > 1e-9:
        return f"electric charge is not conserved (net {charge:+.3g})"
    triality = sum(1 if p.kind == "fermion" else -1 for p in parts if p.colour == 3) % 3
    octets = sum(1 for p in parts if p.colour == 8)
    triplets = sum(1 for p in parts if p.colour == 3)
    if triality or (octets == 1 and triplets == 0):
        return "colour is not conserved (no colour singlet)"
    return None


#: generation swaps that leave every |M|^2 of the sm model unchanged (massless first two
#: generations, CKM = 1): quarks u <-> c, d <-> s; leptons e <-> mu, ve <-> vm
_QUARK_SWAP = {"u": "c", "c": "u", "d": "s", "s": "d", "u~": "c~", "c~": "u~", "d~": "s~",
               "s~": "d~"}
_LEPTON_SWAP = {"e-": "mu-", "mu-": "e-", "e+": "mu+", "mu+": "e+", "ve": "vm", "vm": "ve",
                "ve~": "vm~", "vm~": "ve~"}
_SECOND = frozenset({"c", "c~", "s", "s~", "mu-", "mu+", "vm", "vm~"})


def _canonical(names: tuple[str, ...]) -> tuple[str, ...]:
    """The representative of ``names`` under the generation swaps (first generation first)."""
    def swap(table, ns):
        return tuple(table.get(n, n) for n in ns)

    orbit = {names, swap(_QUARK_SWAP, names), swap(_LEPTON_SWAP, names),
             swap(_QUARK_SWAP, swap(_LEPTON_SWAP, names))}
    return min(orbit, key=lambda ns: (tuple(n in _SECOND for n in ns), ns))


def _incoming_all(initial, final):
    return tuple(initial) + tuple(PARTICLES[f].anti for f in final)


def _average(particles) -> float:
    """1 / (initial spins x colours x identical final-state permutations), as MadGraph's IDEN."""
    initial = particles[:2]
    spins = math.prod(PARTICLES[p].spin_states for p in initial)
    colours = math.prod(PARTICLES[p].colour for p in initial)
    identical = math.prod(math.factorial(k) for k in Counter(particles[2:]).values())
    return 1.0 / (spins * colours * identical)


@cache
def _compile(names: tuple[str, ...], orders, required, excluded, s_excluded, widths,
             decays=()) -> Process:
    legs = _incoming_all(names[:2], names[2:])
    reason = _conserved(legs)
    name = _compile_name(names, ())
    if reason:
        raise ValueError(f"{name!r}: {reason}")
    accept, lowest = _order_filter(orders)
    # decay chains over external leg indices (the final state starts at leg 2)
    leg_decays = tuple((tuple(2 + k for k in pos), parent) for pos, parent in decays)
    try:
        structure = plan(legs, orders=accept, lowest=lowest, required=required,
                         excluded=excluded, s_excluded=s_excluded, decays=leg_decays)
    except ValueError as err:
        if "no tree-level diagram" in str(err):
            raise ValueError(
                f"{name!r} has no tree-level diagram in the sm model"
                + (" with these exclusions" if excluded or s_excluded else "")
                + " (loop-induced processes such as 'g g > h' are not supported)"
            ) from None
        raise ValueError(f"{name!r}: {err}") from None

    def amplitude(ext, params):
        return evaluate(structure, ext, params, widths=widths)

    resonant = names[:2] == ("e+", "e-") and names[2:] == ("w+", "b", "w-", "b~")
    proc = Process(_compile_name(names, decays), names, amplitude, structure.colour_matrix,
                   _average(names), resonant_pair=resonant, decays=leg_decays)
    proc.plan = structure
    proc.colour_basis = structure.colour_basis
    return proc


def process(spec: str, *, define: dict | None = None, widths: str = "all"):
    """Compile a MadGraph process string into a :class:`Process` (one subprocess) or a
    :class:`ProcessSet` (a multiparticle process, e.g. ``"p p > t t~"``).

    ``proc(momenta (..., n, 4), params) -> |M|^2`` summed over final and averaged over initial
    helicities and colours, including the identical-particle factor of the final state: the
    number MadGraph's standalone ``check_sa`` prints. Momenta are incoming first, then the final
    state in the order written. ``widths="all"`` (MadGraph's convention: every propagator of an
    unstable particle has its width, t-channel ones too) or ``"s-channel"``.
    The same object is returned for the same arguments; parameters never retrace it.
    """
    if widths not in ("all", "s-channel"):
        raise ValueError(f"widths must be 'all' or 's-channel'; got {widths!r}")
    ps = parse(spec, define)
    orders, opts = ps.orders, (ps.required, ps.excluded, ps.s_excluded)
    if all(len(x) == 1 for x in ps.initial + ps.final):
        names = tuple(x[0] for x in ps.initial + ps.final)
        return _compile(names, orders, *opts, widths, ps.decays)
    subprocesses, seen, groups = [], set(), {}
    for combo in itertools.product(*(ps.initial + ps.final)):
        key = (combo[:2], tuple(sorted(combo[2:])))
        if key in seen:
            continue
        seen.add(key)
        if _conserved(_incoming_all(combo[:2], combo[2:])):
            continue
        canonical = _canonical(tuple(combo))
        try:
            rep = _compile(canonical, orders, *opts, widths, ps.decays)
        except ValueError:
            continue
        sub = rep if canonical == tuple(combo) else rep.relabelled(
            tuple(combo), _compile_name(tuple(combo), ps.decays))
        groups.setdefault(id(rep), (rep, []))[1].append(len(subprocesses))
        subprocesses.append(sub)
    if not subprocesses:
        raise ValueError(f"{spec!r} has no subprocess with a tree-level diagram in the sm model")
    return ProcessSet(ps.text, tuple(subprocesses),
                      tuple((rep, tuple(members)) for rep, members in groups.values()))


def _compile_name(names, decays) -> str:
    """MadGraph-style name of a subprocess, with its decay chains (final-state positions)."""
    name = f"{names[0]} {names[1]} > {' '.join(names[2:])}"
    if decays:
        name = name + ", " + ", ".join(
            f"{parent} > {' '.join(names[2 + k] for k in pos)}" for pos, parent in decays)
    return name

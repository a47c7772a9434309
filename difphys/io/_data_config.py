"""weaver-core's YAML data configuration, read into difphys's dense inputs.

A weaver-core user describes a training's data in one YAML file (weaver-core,
``weaver/utils/data/config.py`` and the ParT configs such as ``data/JetClass/JetClass_full.yaml``
of jet-universe/particle_transformer). This module reads the same file, with its own parser,
and builds the same arrays, so that such a file trains a difphys Particle Transformer
unchanged. The sections and their meaning (the format as weaver-core defines it):

``treename``
    the ROOT tree to read (default: the only tree of the file, ``tree`` for JetClass).
``selection`` / ``test_time_selection``
    a boolean expression per jet; jets where it is false are dropped (training / evaluation;
    the evaluation selection defaults to the training one).
``new_variables``
    ``name: expression`` pairs evaluated in order on the jagged branches (later ones may use
    earlier ones); a variable that names itself is a no-op.
``preprocess``
    ``method: manual`` (the centres and scales written in ``inputs``) or ``auto`` (a variable
    given without a centre gets one from the training files: the median, and the scale
    ``1 / max(q84 - median, median - q16)`` of its values in the first ``data_fraction`` of
    each file; :func:`auto_standardise`). ``params`` holds resolved values (weaver-core writes
    them back to the YAML file; so does ``difphys train``).
``inputs``
    named groups, each with ``length`` (the padded particle count, ``null`` for per-jet
    values), ``pad_mode`` (``constant``: pad with ``pad_value``; ``wrap``: repeat the jet's
    particles cyclically) and ``vars``: each a name or a list ``[name, centre, scale, min,
    max, pad_value]`` with defaults ``(None, 1, -5, 5, 0)``. A variable with a centre is
    transformed to ``clip((x - centre) * scale, min, max)``; with centre ``null`` it is used as
    it is (and not clipped). NaNs become 0 after padding (``numpy.nan_to_num``, as weaver-core).
``labels``
    ``type: simple`` with ``value: [branch, ...]``: the class is the index of the one true
    branch (a training jet with none or several true is an error, as in weaver-core);
    ``type: custom`` with ``value: {name: expression}``: the expression is the class.
``observers`` / ``monitor_variables``
    per-jet branches carried along to the predictions (observers before any transformation).
``weights``
    ``use_precomputed_weights: true`` with ``weight_branches`` (their product is each jet's
    weight in the loss); weaver-core's histogram reweighting (``reweight_method``) is refused
    with a clear error rather than approximated.

Expressions may use ``np``/``numpy``, ``ak``/``awkward``, ``math`` and ``len`` and the
branches and new variables by name (the namespace weaver-core gives them); they are parsed
first, and names or attributes beginning with ``_`` are refused, so a data config cannot
reach Python's internals.

The arrays are difphys's layout, not weaver-core's: a group is ``(jets, length, vars)``
(the particle axis second-last; weaver-core's is ``(jets, vars, length)``). Why a parser of
our own: weaver-core's ``DataConfig`` is tied to its PyTorch data loader and logger, and its
expression and padding code is not a library API.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._table import Table

PAD_MODES = ("constant", "wrap")
_VAR_DEFAULTS = (None, 1.0, -5.0, 5.0, 0.0)  # centre, scale, min, max, pad_value
_NAMESPACE_MODULES = ("np", "numpy", "ak", "awkward", "math", "len")
_AUTO = "auto"


def _namespace():
    import awkward as ak

    return {"np": np, "numpy": np, "ak": ak, "awkward": ak, "math": math, "len": len}


@dataclass(frozen=True)
class Expression:
    """A weaver-core expression: ``source`` text and the data names it reads."""

    source: str
    names: tuple[str, ...]

    @classmethod
    def parse(cls, source, where: str) -> Expression:
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{where}: expected an expression string; got {source!r}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as err:
            raise ValueError(f"{where}: not a valid expression {source!r}: {err.msg}") from None
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id.startswith("_"):
                    raise ValueError(f"{where}: names beginning with '_' are not allowed in "
                                     f"{source!r}")
                if node.id not in _NAMESPACE_MODULES:
                    names.add(node.id)
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                raise ValueError(f"{where}: attributes beginning with '_' are not allowed in "
                                 f"{source!r}")
            elif isinstance(node, (ast.Lambda, ast.NamedExpr)) or isinstance(
                    node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                raise ValueError(f"{where}: {type(node).__name__} is not allowed in {source!r}")
        return cls(source.strip(), tuple(sorted(names)))

    def __call__(self, columns: Mapping):
        scope = {"__builtins__": {}, **_namespace()}
        scope.update({n: columns[n] for n in self.names})
        return eval(compile(self.source, "<data config>", "eval"), scope)  # noqa: S307


@dataclass(frozen=True)
class InputVar:
    """One input variable: ``name``, and ``clip((x - centre) * scale, min, max)`` when
    ``centre`` is set (``"auto"``: still to be computed by :func:`auto_standardise`);
    ``pad_value`` fills the padding of ``constant`` groups."""

    name: str
    centre: float | str | None = None
    scale: float = 1.0
    min: float = -5.0
    max: float = 5.0
    pad_value: float = 0.0

    def to_yaml(self) -> list:
        return [self.name, self.centre, self.scale, self.min, self.max, self.pad_value]


@dataclass(frozen=True)
class InputGroup:
    """A named input array: its variables, padded ``length`` (``None``: per-jet values) and
    ``pad_mode``."""

    name: str
    vars: tuple[InputVar, ...]
    length: int | None
    pad_mode: str = "constant"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.vars)


class Roles(NamedTuple):
    """The input groups a ParT reads: per-particle ``features``, four-momenta ``vectors``
    (px, py, pz, E) and the particle ``mask``."""

    features: str
    vectors: str
    mask: str


@dataclass(frozen=True)
class DataConfig:
    """A parsed weaver-core data configuration (module docstring); build it with
    :meth:`from_yaml` or :meth:`from_dict`, turn a chunk of jets into arrays with
    :meth:`evaluate`, and those into a ParT batch with :meth:`model_inputs`."""

    inputs: tuple[InputGroup, ...]
    label_type: str
    label_value: tuple
    selection: Expression | None = None
    test_time_selection: Expression | None = None
    new_variables: tuple[tuple[str, Expression], ...] = ()
    preprocess_method: str = "manual"
    data_fraction: float = 0.1
    observers: tuple[str, ...] = ()
    monitor_variables: tuple[str, ...] = ()
    weight_branches: tuple[str, ...] = ()
    treename: str | None = None
    source: dict = field(default_factory=dict, compare=False, repr=False)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path) -> DataConfig:
        """Read a weaver-core YAML data config."""
        import yaml

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no data config {path}")
        try:
            options = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(options, Mapping):
            raise ValueError(f"{path}: a data config is a YAML mapping; got "
                             f"{type(options).__name__}")
        try:
            return cls.from_dict(options)
        except (ValueError, KeyError) as err:
            raise type(err)(f"{path}: {err.args[0] if err.args else err}") from None

    @classmethod
    def from_dict(cls, options: Mapping) -> DataConfig:
        """Parse the mapping of a YAML data config (the sections of the module docstring)."""
        known = {"treename", "branch_magic", "file_magic", "selection", "test_time_selection",
                 "preprocess", "new_variables", "inputs", "labels", "observers",
                 "monitor_variables", "weights", "bucketing"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown data-config section(s) {unknown}; known: {sorted(known)}")
        for unused in ("branch_magic", "file_magic"):
            if options.get(unused):
                raise ValueError(f"'{unused}' (weaver-core's branch/file renaming) is not "
                                 "supported: rename the branches in new_variables")
        pre = dict(options.get("preprocess") or {})
        method = str(pre.get("method", "manual")).lower()
        if not (method.startswith("manual") or method.startswith(_AUTO)):
            raise ValueError(f"preprocess.method must be 'manual' or 'auto'; got {method!r}")
        auto = method.startswith(_AUTO)
        fraction = float(pre.get("data_fraction", 0.1))
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"preprocess.data_fraction must lie in (0, 1]; got {fraction}")
        params = pre.get("params") or {}

        groups = []
        inputs = options.get("inputs") or {}
        if not isinstance(inputs, Mapping) or not inputs:
            raise ValueError("the data config has no 'inputs' groups")
        seen: dict[str, InputVar] = {}
        for gname, g in inputs.items():
            if not isinstance(g, Mapping) or "vars" not in g:
                raise ValueError(f"inputs.{gname} needs 'vars'")
            length = g.get("length")
            if length is not None and (not isinstance(length, int) or length < 1):
                raise ValueError(f"inputs.{gname}.length must be a positive integer or null; "
                                 f"got {length!r}")
            pad_mode = str(g.get("pad_mode", "constant")).lower()
            if pad_mode not in PAD_MODES:
                raise ValueError(f"inputs.{gname}.pad_mode must be one of {PAD_MODES}; got "
                                 f"{pad_mode!r}")
            if gname.endswith("_mask") and pad_mode != "constant":
                raise ValueError(f"inputs.{gname}: a mask input needs pad_mode constant")
            vars_ = []
            for raw in g["vars"] or []:
                entry = list(raw) if isinstance(raw, (list, tuple)) else [raw]
                if not entry or not isinstance(entry[0], str) or len(entry) > 6:
                    raise ValueError(f"inputs.{gname}.vars: expected a name or [name, centre, "
                                     f"scale, min, max, pad_value]; got {raw!r}")
                name = entry[0]
                if name in params:  # resolved parameters win (weaver-core's `params`)
                    p = params[name]
                    var = InputVar(name, p.get("center"), float(p.get("scale", 1.0)),
                                   float(p.get("min", -5.0)), float(p.get("max", 5.0)),
                                   float(p.get("pad_value", 0.0)))
                else:
                    rest = entry[1:] + [None] * (5 - len(entry[1:]))
                    centre = rest[0] if len(entry) > 1 else (_AUTO if auto else None)
                    if gname.endswith("_mask"):
                        centre = None
                    if centre is not None and centre != _AUTO:
                        centre = _number(centre, f"inputs.{gname}.{name} centre")
                    vals = [(_VAR_DEFAULTS[i + 1] if rest[i + 1] is None else
                             _number(rest[i + 1], f"inputs.{gname}.{name}")) for i in range(4)]
                    var = InputVar(name, centre, *vals)
                if name in seen and seen[name] != var:
                    raise ValueError(f"variable {name} appears with different parameters "
                                     f"({seen[name]} and {var})")
                seen[name] = var
                vars_.append(var)
            if not vars_:
                raise ValueError(f"inputs.{gname} has no variables")
            groups.append(InputGroup(gname, tuple(vars_), length, pad_mode))

        labels = options.get("labels") or {}
        ltype = labels.get("type")
        value = labels.get("value")
        if ltype == "simple":
            if not isinstance(value, list) or len(value) < 2 or not all(
                    isinstance(v, str) for v in value):
                raise ValueError("labels.type simple needs value: a list of at least two "
                                 f"label branches; got {value!r}")
            label_value = tuple(value)
        elif ltype == "custom":
            if not isinstance(value, Mapping) or len(value) != 1:
                raise ValueError("labels.type custom needs value: one 'name: expression' "
                                 f"(the class index); got {value!r}")
            (lname, expr), = value.items()
            label_value = ((lname, Expression.parse(expr, f"labels.value.{lname}")),)
        else:
            raise ValueError(f"labels.type must be 'simple' or 'custom'; got {ltype!r}")

        weights = options.get("weights")
        weight_branches: tuple[str, ...] = ()
        if weights:
            if not weights.get("use_precomputed_weights", False):
                raise NotImplementedError(
                    "weights: weaver-core's histogram reweighting (reweight_method "
                    f"{weights.get('reweight_method')!r}) is not supported; precompute the "
                    "weights into a branch and use use_precomputed_weights: true with "
                    "weight_branches")
            weight_branches = tuple(weights.get("weight_branches") or ())
            if not weight_branches:
                raise ValueError("weights.use_precomputed_weights needs weight_branches")
        if options.get("bucketing"):
            raise NotImplementedError("bucketing: use difphys train --bucket instead")

        new_vars = []
        for name, expr in (options.get("new_variables") or {}).items():
            if expr is None or str(expr).strip() == name:
                continue  # self mapping or empty: nothing to compute
            new_vars.append((name, Expression.parse(str(expr), f"new_variables.{name}")))

        def sel(key):
            text = options.get(key)
            return None if not text else Expression.parse(str(text), key)

        observers = tuple(options.get("observers") or ())
        monitors = tuple(options.get("monitor_variables") or ())
        if observers and monitors:
            raise ValueError("set observers or monitor_variables, not both (as weaver-core)")
        selection = sel("selection")
        return cls(inputs=tuple(groups), label_type=ltype, label_value=label_value,
                   selection=selection,
                   test_time_selection=sel("test_time_selection") or selection,
                   new_variables=tuple(new_vars), preprocess_method=method,
                   data_fraction=fraction, observers=observers, monitor_variables=monitors,
                   weight_branches=weight_branches, treename=options.get("treename"),
                   source=dict(options))

    # -- what it needs --------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes of a simple label (``None`` for a custom one, known from the data only)."""
        return len(self.label_value) if self.label_type == "simple" else None

    @property
    def label_names(self) -> tuple[str, ...]:
        """The class names: the label branches of a simple label."""
        return self.label_value if self.label_type == "simple" else (self.label_value[0][0],)

    @property
    def needs_auto(self) -> bool:
        """True while some variable's centre is still ``"auto"``."""
        return any(v.centre == _AUTO for g in self.inputs for v in g.vars)

    def _defined(self) -> dict[str, Expression]:
        return dict(self.new_variables)

    def branches(self, *, training: bool = True, what: Sequence[str] | None = None) -> list[str]:
        """The file branches needed to build ``what`` (default: everything: inputs, labels,
        observers, weights and the selection), new variables expanded to what they read."""
        if what is None:
            what = [*(n for g in self.inputs for n in g.names), *self._label_names_read(),
                    *self.observers, *self.monitor_variables, *self.weight_branches,
                    *self._selection(training).names]
        return self._expand(what)

    def _selection(self, training: bool):
        sel = self.selection if training else self.test_time_selection
        return sel if sel is not None else Expression("True", ())

    def _label_names_read(self) -> tuple[str, ...]:
        if self.label_type == "simple":
            return self.label_value
        return self.label_value[0][1].names

    def _expand(self, names) -> list[str]:
        """The file branches that ``names`` read: themselves, or for new variables the
        branches their expressions read, through :meth:`_closure`."""
        defined = self._defined()
        nodes = set().union(*(self._closure(n) for n in names))
        reads = set(names) | {m for v in nodes for m in defined[v].names}
        return sorted(reads - set(defined))

    # -- evaluation -------------------------------------------------------------------------
    def _columns(self, jets, names) -> dict:
        """The jagged/flat columns ``names`` of ``jets`` (an awkward record array), new
        variables computed in their order."""
        cols = {f: jets[f] for f in jets.fields}
        wanted = set().union(*(self._closure(n) for n in names))
        for name, expr in self.new_variables:
            if name in cols or name not in wanted:
                continue  # a branch of the same name wins, as in weaver-core
            try:
                cols[name] = expr(cols)
            except KeyError as err:
                raise KeyError(f"new_variables.{name} reads {err.args[0]!r}, which is neither "
                               "a branch of the file nor an earlier new variable") from None
        missing = [n for n in names if n not in cols]
        if missing:
            raise KeyError(f"variable(s) {missing} are neither branches of the file nor "
                           "new_variables")
        return cols

    def _closure(self, name) -> set[str]:
        """Every new variable that ``name`` depends on, itself included."""
        defined, out, todo = self._defined(), set(), [name]
        while todo:
            n = todo.pop()
            if n in defined and n not in out:
                out.add(n)
                todo.extend(defined[n].names)
        return out

    def keep(self, jets, *, training: bool = True) -> np.ndarray:
        """Boolean ``(n,)``: the jets of ``jets`` (awkward records of the file's branches)
        that pass the selection and, for training, carry exactly one simple label."""
        import awkward as ak

        sel = self._selection(training)
        cols = self._columns(jets, list(sel.names))
        keep = np.asarray(ak.to_numpy(sel(cols)), dtype=bool) if sel.names else \
            np.ones(len(jets), bool)
        if keep.ndim != 1 or len(keep) != len(jets):
            keep = np.broadcast_to(keep, (len(jets),)).copy()
        if training and self.label_type == "simple":
            onehot = self._onehot(jets)
            count = onehot.sum(axis=1)
            bad = keep & (count != 1)
            if np.any(bad):
                first = int(np.flatnonzero(bad)[0])
                what = "no class" if count[first] == 0 else "several classes"
                raise ValueError(f"inconsistent labels: {int(bad.sum())} selected jet(s) have "
                                 f"none or several of {list(self.label_value)} set (the first, "
                                 f"entry {first} of the chunk, has {what}); tighten the "
                                 "selection")
        return keep

    def _onehot(self, jets) -> np.ndarray:
        import awkward as ak

        return np.stack([np.asarray(ak.to_numpy(jets[n])).astype(bool).astype(np.int64)
                         for n in self.label_value], axis=1)

    def evaluate(self, jets, *, training: bool = True, keep: np.ndarray | None = None
                 ) -> Table:
        """The arrays of the jets of ``jets`` that pass :meth:`keep` (or of those marked by
        ``keep (n,)`` bool, the caller's own :meth:`keep` of the same jets), as a
        :class:`Table`.

        ``jets`` is an awkward record array of the file branches (:meth:`branches`). Columns:
        one per input group, ``(n, length, n_vars)`` float32 (``(n, n_vars)`` for a group
        with ``length: null``); ``label (n,)`` int32; each observer and monitor variable
        ``(n,)``; ``weight (n,)`` float32 with precomputed weights. Raises ``ValueError``
        while some centre is still ``"auto"`` (:func:`auto_standardise` first)."""
        import awkward as ak

        if self.needs_auto:
            auto = sorted(v.name for g in self.inputs for v in g.vars if v.centre == _AUTO)
            raise ValueError(f"variables {auto} have centre 'auto': compute them with "
                             "auto_standardise(config, files) first")
        jets = jets[self.keep(jets, training=training) if keep is None else keep]
        label_reads = () if self.label_type == "simple" else self.label_value[0][1].names
        names = [*(n for g in self.inputs for n in g.names), *self.observers,
                 *self.monitor_variables, *label_reads]
        cols = self._columns(jets, names)
        out = {}
        for name in self.observers:
            out[name] = np.asarray(ak.to_numpy(cols[name]))
        for g in self.inputs:
            arrays = [_pad(cols[v.name], g, v) for v in g.vars]
            out[g.name] = np.nan_to_num(np.stack(arrays, axis=-1)).astype(np.float32)
        if self.label_type == "simple":
            out["label"] = np.argmax(self._onehot(jets), axis=1).astype(np.int32) \
                if len(jets) else np.zeros(0, np.int32)
        else:
            (_, expr), = self.label_value
            value = np.asarray(ak.to_numpy(expr(cols)))
            if not np.issubdtype(value.dtype, np.integer):
                if np.any(value != np.round(value)):
                    raise ValueError("a custom label must be an integer class index")
            out["label"] = value.astype(np.int32)
        for name in self.monitor_variables:
            out[name] = np.asarray(ak.to_numpy(cols[name]))
        if self.weight_branches:
            w = np.ones(len(jets))
            for b in self.weight_branches:
                w = w * np.asarray(ak.to_numpy(jets[b]), np.float64)
            if np.any(~np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"weights {self.weight_branches} must be finite and >= 0")
            out["weight"] = w.astype(np.float32)
        return Table(out)

    # -- difphys's ParT ------------------------------------------------------------------
    def roles(self, roles: Mapping[str, str] | None = None) -> Roles:
        """Which input group is the ParT ``features``, ``vectors`` (px, py, pz, E, as
        weaver-core's ParticleTransformer reads them) and ``mask``: by weaver-core's names
        (groups ending in ``_features``, ``_vectors``, ``_mask``; ``_points`` is not used by
        ParT), unless ``roles`` names them."""
        names = [g.name for g in self.inputs]
        out = dict(roles._asdict() if isinstance(roles, Roles) else (roles or {}))
        for role in ("features", "vectors", "mask"):
            if role not in out:
                hits = [n for n in names if n.endswith(f"_{role}") or n == role]
                if len(hits) != 1:
                    raise ValueError(f"cannot tell which input group is the ParT {role!r} from "
                                     f"the names {names}; name it with roles={{'{role}': ...}}")
                out[role] = hits[0]
            if out[role] not in names:
                raise ValueError(f"roles: {role} -> {out[role]!r} is not an input group "
                                 f"({names})")
        group = {g.name: g for g in self.inputs}
        if len(group[out["vectors"]].vars) != 4:
            raise ValueError(f"the vectors group {out['vectors']!r} needs 4 variables (px, py, "
                             f"pz, E); got {list(group[out['vectors']].names)}")
        if len(group[out["mask"]].vars) != 1:
            raise ValueError(f"the mask group {out['mask']!r} needs one variable")
        lengths = {group[out[r]].length for r in ("features", "vectors", "mask")}
        if len(lengths) != 1 or None in lengths:
            raise ValueError(f"features, vectors and mask need one common particle length; "
                             f"got {sorted(str(x) for x in lengths)}")
        unknown = sorted(set(out) - set(Roles._fields))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; the roles are {Roles._fields}")
        return Roles(out["features"], out["vectors"], out["mask"])

    def input_dim(self, roles: Mapping[str, str] | None = None) -> int:
        """The number of per-particle features the ParT reads."""
        name = self.roles(roles).features
        return len(next(g for g in self.inputs if g.name == name).vars)

    def model_inputs(self, arrays: Mapping, roles: Mapping[str, str] | None = None) -> Table:
        """A ParT batch from the output of :meth:`evaluate`: ``features (n, P, F)`` and
        ``p4 (n, P, 4)`` (E, px, py, pz) float32, zero where ``mask (n, P)`` bool is false,
        ``label``, ``weight`` (when present) and the observers."""
        r = self.roles(roles)
        mask = np.asarray(arrays[r.mask])[..., 0] > 0
        vec = np.asarray(arrays[r.vectors])
        p4 = np.where(mask[..., None], vec[..., [3, 0, 1, 2]], 0.0).astype(np.float32)
        feats = np.where(mask[..., None], arrays[r.features], 0.0).astype(np.float32)
        out = {"features": feats, "p4": p4, "mask": mask, "label": np.asarray(arrays["label"])}
        for k in ("weight", *self.observers, *self.monitor_variables):
            if k in arrays:
                out[k] = np.asarray(arrays[k])
        return Table(out)

    # -- writing back -----------------------------------------------------------------------
    def to_yaml(self) -> str:
        """The YAML text of this config, with resolved centres under ``preprocess.params``
        (as weaver-core writes its auto-standardised configs)."""
        import yaml

        out = dict(self.source)
        params = {v.name: {"length": g.length, "pad_mode": g.pad_mode,
                           "center": v.centre, "scale": v.scale, "min": v.min, "max": v.max,
                           "pad_value": v.pad_value}
                  for g in self.inputs for v in g.vars}
        out["preprocess"] = {**dict(out.get("preprocess") or {}), "params": params}
        return yaml.safe_dump(out, sort_keys=False)

    def write_yaml(self, path) -> Path:
        """Write :meth:`to_yaml` to ``path``."""
        path = Path(path)
        path.write_text(self.to_yaml())
        return path


def _number(x, where: str) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number; got {x!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{where}: expected a finite number; got {x!r}")
    return value


def _standardise(x, var: InputVar):
    """``clip((x - centre) * scale, min, max)`` of the flat values ``x`` (weaver-core's
    order: standardise, clip, then pad)."""
    if var.centre is None:
        return x
    return np.clip((x - var.centre) * var.scale, var.min, var.max)


def _pad(x, group: InputGroup, var: InputVar) -> np.ndarray:
    """A jagged column ``(n, var)``, standardised (:func:`_standardise`), as ``(n, length)``
    float64: the first ``length`` entries, then ``pad_value`` (``constant``) or the jet's
    entries repeated (``wrap``; a jet with no entry stays 0). A flat column with ``length:
    null`` is returned as ``(n,)``."""
    import awkward as ak

    if group.length is None:
        if x.ndim != 1:
            raise ValueError(f"inputs.{group.name}.{var.name} is per particle; the group needs "
                             "a length")
        return _standardise(np.asarray(ak.to_numpy(x), np.float64), var)
    if x.ndim == 1:  # a per-jet value in a particle group: one entry per jet (weaver-core)
        x = ak.unflatten(x, 1)
    counts = np.asarray(ak.num(x, axis=1))
    flat = _standardise(np.asarray(ak.to_numpy(ak.flatten(x, axis=1)), np.float64), var)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    j = np.arange(group.length)
    if group.pad_mode == "wrap":
        safe = np.maximum(counts, 1)[:, None]
        idx = starts[:, None] + j[None, :] % safe
        out = np.where(counts[:, None] > 0, flat[np.minimum(idx, max(len(flat) - 1, 0))]
                       if len(flat) else 0.0, 0.0)
    else:
        idx = starts[:, None] + j[None, :]
        real = j[None, :] < counts[:, None]
        out = np.where(real, flat[np.where(real, idx, 0)] if len(flat) else 0.0, var.pad_value)
    return np.asarray(out, np.float64)


def auto_standardise(config: DataConfig, read_fraction) -> DataConfig:
    """``config`` with every ``"auto"`` centre and its scale computed from data, by
    weaver-core's ``AutoStandardizer`` rule: over all values of the variable in the selected
    training jets, centre = median and ``scale = 1 / max(q84 - median, median - q16)``
    (1 when that is 0); NaNs count as 0.

    ``read_fraction(branches) -> awkward records`` returns the jets to use (the first
    ``config.data_fraction`` of each training file; :func:`difphys.io.read_fraction`)."""
    import awkward as ak

    if not config.needs_auto:
        return config
    auto = [v.name for g in config.inputs for v in g.vars if v.centre == _AUTO]
    jets = read_fraction(config.branches(what=[*auto, *config._selection(True).names]))
    jets = jets[config.keep(jets, training=False)] if config.selection is not None else jets
    cols = config._columns(jets, auto)
    resolved = {}
    for name in auto:
        a = np.nan_to_num(np.asarray(ak.to_numpy(ak.flatten(cols[name], axis=None)),
                                     np.float64))
        if a.size == 0:
            raise ValueError(f"no values of {name} to standardise it from")
        lo, centre, hi = np.percentile(a, [16, 50, 84])
        width = max(hi - centre, centre - lo)
        resolved[name] = (float(centre), 1.0 if width == 0 else float(1.0 / width))
    groups = tuple(replace(g, vars=tuple(
        replace(v, centre=resolved[v.name][0], scale=resolved[v.name][1])
        if v.centre == _AUTO else v for v in g.vars)) for g in config.inputs)
    return replace(config, inputs=groups)

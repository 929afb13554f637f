"""coremltools 9.0 with numpy >= 2.4: a narrow shim, applied by ``coreml_tools.ct()`` before any conversion.

numpy 2.4 made ``int()`` / ``float()`` / ``bool()`` of an array with ``ndim > 0`` an error ("only 0-dimensional
arrays can be converted to Python scalars"; deprecated since numpy 1.25). coremltools 9.0's PyTorch frontend does
that in ``ops._cast``, which converts the ``aten::Int`` / ``aten::Bool`` nodes that ``torch.jit.trace`` records
for shape arithmetic (``x.shape``, ``int(h * w)``, ``x.size(-1) ** -0.5``, ``F.interpolate(size=...)``, every
attention block): their compile-time value is a ``(1,)`` array, and ``int(x.val)`` raises. Upstream fixed
``_cast`` after 9.0 (apple/coremltools#2632); 9.0 is the newest release.

Also added: a converter for ``Tensor.new_ones``, which 9.0 lacks (``new_zeros`` has one), used by Hugging Face's
BERT and DETR masks.

Patched: ``ops._cast`` — a foldable 1-element value is cast through its 0-d view, anything else goes to the
original. Only on coremltools 9.0.x (a no-op otherwise); idempotent. The same expression on numpy < 2.4 gave the
same number (with a DeprecationWarning), so results do not change.

Left alone, measured unreachable from a traced model: coremltools 9.0 has six more ``int/float/bool(<input>.val)``
sites in the torch frontend (``softplus``, ``pad``, ``upsample_linear1d``, ``upsample_bilinear2d``, ``getitem``,
``threshold``); in a TorchScript trace their arguments are constants or 0-d values, which numpy 2.4 still
converts (models passing shape-derived values to each of them convert once ``_cast`` is patched).
"""

from __future__ import annotations

import numpy as np

PATCHED_VERSIONS = ("9.0",)  # coremltools releases with the unfixed _cast

_state: dict = {}


def needed(version: str) -> bool:
    return any(version == v or version.startswith(v + ".") for v in PATCHED_VERSIONS)


def _scalar(value):
    """A 1-element array with ndim > 0 as its 0-d view (what int()/float()/bool() accepted before numpy 2.4)."""
    if isinstance(value, np.ndarray) and value.ndim > 0 and value.size == 1:
        return value.reshape(())
    return value


def apply() -> list[str]:
    """Patch coremltools' torch frontend once; the names of the patched functions ([] = nothing to patch)."""
    if "patched" not in _state:
        import coremltools

        patched = []
        if needed(coremltools.__version__):
            try:
                from coremltools.converters.mil.frontend.torch import ops
            except ImportError:  # no torch: no torch frontend, nothing to patch
                ops = None
            if ops is not None and not getattr(ops._cast, "_edgepack_compat", False):
                ops._cast = _make_cast(ops, ops._cast)
                patched.append("coremltools.converters.mil.frontend.torch.ops._cast")
            if ops is not None and _add_new_ones(ops):
                patched.append("coremltools.converters.mil.frontend.torch.ops.new_ones (added)")
        _state["patched"] = patched
    return _state["patched"]


def _add_new_ones(ops) -> bool:
    """``Tensor.new_ones`` (BERT's and DETR's masks) has no converter in coremltools 9.0, while ``new_zeros`` has:
    register the same fill with 1 (zoo: BERT and DETR stopped at "convert function for op 'new_ones' not
    implemented"). Added only when coremltools has none of its own."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if "new_ones" in _TORCH_OPS_REGISTRY:
        return False

    def new_ones(context, node):
        from coremltools.converters.mil.frontend.torch.utils import NUM_TO_DTYPE_STRING, NUM_TO_NUMPY_DTYPE
        from coremltools.converters.mil.mil import types

        inputs = ops._get_inputs(context, node)
        shape = inputs[1]
        if isinstance(shape, list):  # a dynamic size is a list of scalars
            shape = ops.mb.concat(values=shape, axis=0)
        code = inputs[2].val if len(inputs) > 2 and inputs[2] is not None else None
        if code is not None:  # new_ones(size, dtype=...): that dtype; else the tensor's own
            np_dtype, name = NUM_TO_NUMPY_DTYPE[int(code)], NUM_TO_DTYPE_STRING[int(code)]
        else:
            np_dtype = types.nptype_from_builtin(inputs[0].dtype)
            name = types.builtin_to_string(inputs[0].dtype)
        known = getattr(shape, "val", None)
        if known is not None:  # a size known when converting (also () for a scalar)
            dims = tuple(int(d) for d in np.asarray(known).reshape(-1))
            context.add(ops.mb.const(val=np.ones(dims, np_dtype), name=node.name))
        else:
            ones = ops.mb.fill(shape=ops.mb.cast(x=shape, dtype="int32"), value=1.0)
            context.add(ops.mb.cast(x=ones, dtype=name, name=node.name))

    register_torch_op(new_ones)
    return True


def _make_cast(ops, original):
    def _cast(context, node, dtype, dtype_name):
        x = ops._get_inputs(context, node, expected=1)[0]
        val = x.val if x.can_be_folded_to_const() else None
        if isinstance(val, np.ndarray) and val.ndim > 0 and val.size == 1 and not isinstance(val, dtype):
            context.add(ops.mb.const(val=dtype(_scalar(val)), name=node.name), node.name)
        else:
            original(context, node, dtype, dtype_name)

    _cast._edgepack_compat = True
    _cast.__wrapped__ = original
    return _cast

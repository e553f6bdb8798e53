"""Makes Triton's interpreter run `tl.associative_scan` / `tl.reduce` with a custom
combine function, and calls of @triton.jit device functions, fast enough to test the GPU
tile configuration on the CPU in minutes rather than hours.

The interpreter folds such a scan one element at a time, calling the combine function
on scalars for every (row, column) of a tile. Here the combine function runs on whole
tiles in log2(n) steps, the way a GPU evaluates it: a Hillis-Steele scan, a pairwise tree
reduction, both keeping every pair in order (earlier operand first), which is all that
associativity allows a compiler to assume. Used by the tests and the GPU check's dry run;
never by the pack. A Triton whose interpreter lacks these hooks is left as it is (slow
but correct).

Device functions: the interpreter re-patches triton.language for every call of one (a few
milliseconds each, most of a kernel's time when it is built from small functions), though
the launch has already patched it for the whole grid; inside a launch the call skips that.
"""

import numpy as np


def _combine(op, input, left, right):
    """op.combine_fn on two tuples of numpy arrays (left = earlier operand)."""
    to = [op.to_tensor(x, arg.dtype) for x, arg in zip(left + right, input + input)]
    ret = op.combine_fn.fn(*to)
    ret = ret if isinstance(ret, tuple) else (ret,)
    shape = np.broadcast_shapes(left[0].shape, right[0].shape)
    return [np.broadcast_to(np.asarray(r.handle.data if hasattr(r, "handle") else r), shape) for r in ret]


def _take(arrays, start, stop, step, axis):
    index = [slice(None)] * arrays[0].ndim
    index[axis] = slice(start, stop, step)
    return [a[tuple(index)] for a in arrays]


def _scan(self, input):
    vals = [np.array(arg.handle.data) for arg in input]
    n, axis = vals[0].shape[self.axis], self.axis
    index = np.arange(n).reshape([-1 if d == axis else 1 for d in range(vals[0].ndim)])
    off = 1
    with np.errstate(all="ignore"):  # the wrapped-around lanes are computed and discarded
        while off < n:  # vals[i] <- vals[i - off] (+) vals[i] for i >= off (tiles keep their shape)
            done = _combine(self, input, [np.roll(v, off, axis=axis) for v in vals], vals)
            keep = index >= off
            vals = [np.where(keep, d, v) for v, d in zip(vals, done)]
            off *= 2
    return [self.to_tensor(v, arg.dtype) for v, arg in zip(vals, input)]


def _reduce_tree(self, input):
    vals = [np.array(arg.handle.data) for arg in input]
    axis = self.axis
    while vals[0].shape[axis] > 1:  # pairs (0,1), (2,3), ... in order; tile sizes are powers of 2
        n = vals[0].shape[axis]
        vals = _combine(self, input, _take(vals, 0, n, 2, axis), _take(vals, 1, n, 2, axis))
    return [self.to_tensor(np.take(v, 0, axis=axis), arg.dtype) for v, arg in zip(vals, input)]


def _launch_patches_lang_once(interpreter):
    """Device-function calls inside a launch patch each language module (triton.language,
    triton.language.core) once; the launch restores them as before."""
    import triton.language as tl
    grid_call, device_call = interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__
    patched = []     # per launch in progress: the language modules patched for it

    def launch(self, *args, **kwargs):
        patched.append({id(tl)})
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            patched.pop()

    def call(self, *args, **kwargs):
        langs = {id(m) for m in self.fn.__globals__.values() if m is tl or m is tl.core}
        if not patched or not langs <= patched[-1]:
            if patched:
                patched[-1] |= langs
            return device_call(self, *args, **kwargs)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    interpreter.GridExecutor.__call__ = launch
    interpreter.InterpretedFunction.__call__ = call


def install() -> bool:
    """Patches the interpreter's generic scan and reduce and its device-function calls; True
    when it did."""
    try:
        from triton.runtime import interpreter
        scan_cls, reduce_cls = interpreter.ScanOps, interpreter.ReduceOps
        slow_reduce = reduce_cls.generic_reduce
        scan_cls.generic_scan  # noqa: B018  (the hooks must exist)
        interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.rewrite  # noqa: B018
    except (ImportError, AttributeError):
        return False
    if getattr(scan_cls, "_vrwkv_fast", False):
        return True

    def reduce(self, input):
        if self.axis is None or self.keep_dims:
            return slow_reduce(self, input)
        return _reduce_tree(self, input)

    scan_cls.generic_scan = _scan
    reduce_cls.generic_reduce = reduce
    _launch_patches_lang_once(interpreter)
    scan_cls._vrwkv_fast = True
    return True

#!/usr/bin/env python3
"""Convert CADS checkpoints between PyTorch (.pth) and cads (safetensors), both ways, with or
without torch installed.

    # the authors' checkpoint -> safetensors for cads (PyTorch names and layouts, float32)
    python3 scripts/convert_cads_checkpoint.py checkpoint.pth teacher.safetensors [--key teacher]

    # weights saved by cads (nn::save_safetensors) -> a checkpoint in the authors' layout
    python3 scripts/convert_cads_checkpoint.py --to-pth encoder.safetensors out.pth \
        [--key teacher] [--prefix backbone.]

To safetensors: takes the state dict under `--key` (the authors' training script saves
`{'teacher': ..., 'student': ..., 'optimizer': ..., 'epoch': ..., 'cads_loss': ...}`; `--key ''`
takes the whole file as the state dict), drops a DistributedDataParallel `module.` prefix,
converts every floating tensor to float32 and writes it under its PyTorch name and layout
(`backbone.patch_embed1.proj.0.weight`, `head.last_layer.weight_v`, ...). cads converts layouts
as it loads (`PvtEncoder::load_safetensors` with `checkpoint_options()`). A key that is absent is
an error listing the keys the file has; an empty state dict is an error; nothing is written then.

To .pth: every tensor of the safetensors file under `--prefix` (added unless already there) in
`{key: OrderedDict}`, loadable by `torch.load(path, weights_only=True)` and then by the authors'
`model.load_state_dict(ckpt['teacher'])`-style code.

Without torch (CI has none, and `--no-torch` forces it): a .pth is a zip archive holding a
pickle (`data.pkl`) and one raw little-endian file per storage (`data/<key>`). The reader unpickles
with a restricted unpickler that executes nothing: tensors are rebuilt from their storages and
strides, `collections.OrderedDict` is a dict, and any other global becomes an inert placeholder.
The writer pickles references to `torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` by
name through stub modules put in `sys.modules` only while it runs (and only when torch is
absent). Legacy (pre-1.6, non-zip) files need torch.

`--selftest OUT` writes a small synthetic safetensors file (used by the test suite).
"""
import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

# ----- a tensor without torch: dtype name, shape, float32 little-endian bytes -----


class HostTensor:
    """A dense row-major float32 tensor (values as little-endian bytes)."""

    def __init__(self, shape, data):
        count = 1
        for d in shape:
            count *= d
        if len(data) != 4 * count:
            raise ValueError(f"{len(data)} bytes for shape {list(shape)}")
        self.shape = list(shape)
        self.data = bytes(data)


# storage class name -> (bytes per element, converter of raw little-endian bytes to f32 bytes)
def _f16_to_f32(raw):
    n = len(raw) // 2
    return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", raw))


def _bf16_to_f32(raw):
    # bf16 is the upper half of an f32: little-endian f32 bytes are [0, 0, lo, hi].
    out = bytearray(2 * len(raw))
    out[2::4] = raw[0::2]
    out[3::4] = raw[1::2]
    return bytes(out)


def _f64_to_f32(raw):
    n = len(raw) // 8
    return struct.pack(f"<{n}f", *struct.unpack(f"<{n}d", raw))


STORAGES = {
    "FloatStorage": (4, lambda raw: bytes(raw)),
    "HalfStorage": (2, _f16_to_f32),
    "BFloat16Storage": (2, _bf16_to_f32),
    "DoubleStorage": (8, _f64_to_f32),
}
# Integer and bool storages (step counters, masks) are read as opaque: they are not weights.
OTHER_STORAGES = {
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}


class _Opaque:
    """Whatever the restricted unpickler does not rebuild (optimizer internals, argparse
    namespaces, ...): accepts any construction and state, does nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Opaque(*args)


def _opaque_global(module, name):
    return type(name, (_Opaque,), {"__module__": "opaque." + module})


class _StorageRef:
    def __init__(self, archive, prefix, type_name, key, numel):
        self.archive, self.prefix = archive, prefix
        self.type_name, self.key, self.numel = type_name, key, numel


class LazyTensor:
    """A tensor as the pickle describes it; materialised only when asked (a full training
    checkpoint holds the optimizer's moments too, which the conversion never reads)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.shape, self.stride = list(size), list(stride)

    def is_float(self):
        return self.storage.type_name in STORAGES

    def materialise(self):
        s = self.storage
        width, convert = STORAGES[s.type_name]
        raw = s.archive.read(f"{s.prefix}data/{s.key}")
        count = 1
        for d in self.shape:
            count *= d
        contiguous, expect = True, 1
        for d, st in zip(reversed(self.shape), reversed(self.stride)):
            if d != 1 and st != expect:
                contiguous = False
            expect *= d
        if contiguous:
            chunk = raw[self.offset * width : (self.offset + count) * width]
        else:
            # Gather element by element in row-major order (rare in a state dict).
            out = bytearray()
            index = [0] * len(self.shape)
            for _ in range(count):
                at = self.offset + sum(i * st for i, st in zip(index, self.stride))
                out += raw[at * width : (at + 1) * width]
                for axis in reversed(range(len(self.shape))):
                    index[axis] += 1
                    if index[axis] < self.shape[axis]:
                        break
                    index[axis] = 0
            chunk = bytes(out)
        return HostTensor(self.shape, convert(chunk))


def _rebuild_tensor_v2(storage, offset, size, stride, *rest):
    return LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, archive, prefix):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and (name in STORAGES or name in OTHER_STORAGES):
            return name  # the storage's type travels as its name
        return _opaque_global(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, type_name, key, _location, numel = pid
        if not isinstance(type_name, str):
            type_name = getattr(type_name, "__name__", str(type_name))
        return _StorageRef(self.archive, self.prefix, type_name, key, numel)


def load_pth_without_torch(path):
    """The object a zip-format .pth holds, tensors as LazyTensor."""
    if not zipfile.is_zipfile(path):
        raise SystemExit(
            f"error: {path}: not a zip-format PyTorch file (saved before torch 1.6?); "
            "reading it needs torch"
        )
    archive = zipfile.ZipFile(path)
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
        raise SystemExit(f"error: {path}: no data.pkl in the archive")
    prefix = pickles[0][: -len("data.pkl")]
    return _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix).load()


def load_pth_with_torch(path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # e.g. a global weights_only refuses
        print(
            f"note: torch.load(weights_only=True) refused {path} ({type(error).__name__}); "
            "reading it with the restricted unpickler instead",
            file=sys.stderr,
        )
        return load_pth_without_torch(path)


def _torch_to_host(value):
    import torch

    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return None
        t = value.detach().to(torch.float32).contiguous().cpu()
        return HostTensor(list(t.shape), t.numpy().astype("<f4").tobytes())
    if isinstance(value, LazyTensor):
        return value.materialise() if value.is_float() else None
    return None


def state_dict_from(checkpoint, key, use_torch):
    """name -> HostTensor of the floating tensors under `key` (`module.` dropped)."""
    obj = load_pth_with_torch(checkpoint) if use_torch else load_pth_without_torch(checkpoint)
    if key:
        if not isinstance(obj, dict):
            raise SystemExit(
                f"error: {checkpoint}: --key {key!r} asked for, but the file holds a "
                f"{type(obj).__name__}, not a dict (use --key '' to take it whole)"
            )
        if key not in obj:
            have = ", ".join(repr(k) for k in obj.keys())
            raise SystemExit(
                f"error: {checkpoint}: no key {key!r}; the checkpoint has: {have} "
                "(--key '' takes the whole file as the state dict)"
            )
        obj = obj[key]
    if not isinstance(obj, dict):
        raise SystemExit(f"error: {checkpoint}: the state dict is a {type(obj).__name__}, not a dict")
    out = {}
    for name, value in obj.items():
        host = _torch_to_host(value) if use_torch else (
            value.materialise() if isinstance(value, LazyTensor) and value.is_float() else None
        )
        if host is None:
            continue
        if name.startswith("module."):
            name = name[len("module."):]
        out[name] = host
    if not out:
        raise SystemExit(
            f"error: {checkpoint}: no floating-point tensors under {key or 'the top level'!r}; "
            "nothing written"
        )
    return out


# ----- safetensors, by hand (8-byte little-endian header length, JSON header, raw data) -----


def write_atomically(path, chunks):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_safetensors(tensors, path):
    """tensors: name -> HostTensor. Written to path.tmp, renamed."""
    if not tensors:
        raise SystemExit(f"error: no tensors to write to {path}")
    header, offset = {}, 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        header[name] = {"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    write_atomically(path, [struct.pack("<Q", len(blob)), blob] + [tensors[n].data for n in names])


def read_safetensors(path):
    """name -> HostTensor (F32, F16, BF16, F64 converted to f32), in file order."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise SystemExit(f"error: {path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + n])
    except ValueError as error:
        raise SystemExit(f"error: {path}: bad safetensors header ({error})")
    body = raw[8 + n :]
    convert = {
        "F32": lambda b: bytes(b),
        "F16": _f16_to_f32,
        "BF16": _bf16_to_f32,
        "F64": _f64_to_f32,
    }
    out = {}
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in entries:
        if info["dtype"] not in convert:
            raise SystemExit(f"error: {path}: {name}: dtype {info['dtype']}, expected F32, F16, BF16 or F64")
        a, b = info["data_offsets"]
        out[name] = HostTensor(info["shape"], convert[info["dtype"]](body[a:b]))
    return out


# ----- .pth writing -----


def _torch_stubs():
    """Stand-ins for `torch`, `torch._utils` so that pickle references them by name. Only used
    when torch is absent; removed again by the caller."""
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called here: torch.load calls the real one
        raise RuntimeError("stub")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    torch_mod.FloatStorage = float_storage
    torch_mod._utils = utils_mod
    return {"torch": torch_mod, "torch._utils": utils_mod}


class _TensorForPickle:
    def __init__(self, index, tensor, rebuild, storage_type):
        self.index, self.tensor = index, tensor
        self.rebuild, self.storage_type = rebuild, storage_type

    def __reduce__(self):
        shape = self.tensor.shape
        stride, acc = [], 1
        for d in reversed(shape):
            stride.insert(0, acc)
            acc *= d
        storage = _StorageForPickle(self.index, self.storage_type, acc)
        return (
            self.rebuild,
            (storage, 0, tuple(shape), tuple(stride), False, collections.OrderedDict()),
        )


class _StorageForPickle:
    def __init__(self, index, storage_type, numel):
        self.index, self.storage_type, self.numel = index, storage_type, numel


class _PthPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageForPickle):
            return ("storage", obj.storage_type, str(obj.index), "cpu", obj.numel)
        return None


def _zip_entry(archive, name, data):
    """A stored (uncompressed) entry whose data starts on a 64-byte boundary, as torch.save
    aligns them (an extra field of padding, id 'FB', like torch's writer)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    offset = archive.fp.tell()
    base = offset + 30 + len(name.encode("utf-8"))
    pad = (-(base + 4)) % 64
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
    archive.writestr(info, data)


def write_pth_without_torch(obj_builder, tensors, path):
    """`tensors`: list of HostTensor; `obj_builder(make_tensor)` returns the object to pickle."""
    installed = {}
    for name, module in _torch_stubs().items():
        if name in sys.modules:
            raise RuntimeError(f"{name} is already imported; use torch.save")
        sys.modules[name] = installed[name] = module
    try:
        torch_mod = sys.modules["torch"]
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        made = [
            _TensorForPickle(i, t, rebuild, torch_mod.FloatStorage) for i, t in enumerate(tensors)
        ]
        buffer = io.BytesIO()
        _PthPickler(buffer, protocol=2).dump(obj_builder(made))
        pickled = buffer.getvalue()
    finally:
        for name in installed:
            del sys.modules[name]
    stem = "archive"
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        _zip_entry(archive, f"{stem}/data.pkl", pickled)
        _zip_entry(archive, f"{stem}/byteorder", b"little")
        for i, t in enumerate(tensors):
            _zip_entry(archive, f"{stem}/data/{i}", t.data)
        _zip_entry(archive, f"{stem}/version", b"3\n")
        _zip_entry(archive, f"{stem}/.data/serialization_id", b"0" * 40)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_checkpoint(state, key, path, use_torch):
    """Write `{key: OrderedDict(name -> tensor)}` (or the bare state dict with key '')."""
    names = list(state)
    if use_torch:
        import torch

        od = collections.OrderedDict()
        for name in names:
            t = state[name]
            value = torch.frombuffer(bytearray(t.data), dtype=torch.float32).reshape(t.shape)
            od[name] = value.clone()
        tmp = path + ".tmp"
        torch.save({key: od} if key else od, tmp)
        os.replace(tmp, path)
        return

    def build(made):
        od = collections.OrderedDict(zip(names, made))
        return {key: od} if key else od

    write_pth_without_torch(build, [state[n] for n in names], path)


def torch_available():
    # find_spec does not import it: the torch-free writer needs `torch` absent from sys.modules.
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def describe(tensors, what, path):
    names = list(tensors)
    count = sum(len(t.data) // 4 for t in tensors.values())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    print(f"wrote {len(names)} tensors ({count} float32 values) {what} {path}: {shown}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", help="checkpoint.pth (or, with --to-pth, a .safetensors)")
    p.add_argument("output", nargs="?")
    p.add_argument("--key", default="teacher", help="state dict in the checkpoint ('' = whole file)")
    p.add_argument("--to-pth", action="store_true", help="safetensors -> authors' checkpoint")
    p.add_argument("--prefix", default="backbone.", help="with --to-pth: prefix added to names")
    p.add_argument("--no-torch", action="store_true", help="use the torch-free reader/writer")
    p.add_argument("--selftest", metavar="OUT")
    args = p.parse_args()
    if args.selftest:
        values = [float(i) * 0.5 for i in range(8)]
        write_safetensors(
            {
                "backbone.norm1.weight": HostTensor([8], struct.pack("<8f", *values)),
                "head.last_layer.weight_g": HostTensor([1, 1], struct.pack("<f", 1.0)),
            },
            args.selftest,
        )
        return 0
    if not (args.source and args.output):
        p.error("source and output are required")
    use_torch = not args.no_torch and torch_available()
    if args.to_pth:
        tensors = read_safetensors(args.source)
        if not tensors:
            raise SystemExit(f"error: {args.source}: no tensors; nothing written")
        state = collections.OrderedDict()
        for name, t in tensors.items():
            full = name if name.startswith(args.prefix) else args.prefix + name
            state[full] = t
        write_checkpoint(state, args.key, args.output, use_torch)
        where = f"under {args.key!r}" if args.key else "as a bare state dict"
        describe(state, f"(float32, {where}, torch={'yes' if use_torch else 'no'}) to", args.output)
        return 0
    tensors = state_dict_from(args.source, args.key, use_torch)
    write_safetensors(tensors, args.output)
    describe(tensors, "(float32) to", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

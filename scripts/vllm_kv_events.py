"""vLLM's own KV-event classes, without installing vLLM.

`load()` returns the module `vllm/distributed/kv_events.py` of the vLLM wheel
(`pip download vllm==0.34.0 --no-deps`, cached under ~/.cache/lantern/vllm-kv-events/), loaded
standalone: its vLLM-internal imports (config, logger, network utils, the `ExternalBlockHash`
alias) are replaced by minimal stubs, since importing the real package pulls in torch. The
msgspec classes (`KVEventBatch`, `BlockStored`, `BlockRemoved`, `AllBlocksCleared`) are
vLLM's, unchanged: decoding and encoding with them is what vLLM and its consumers do.

`array_layout(kv)` derives the array-encoded variants that vLLM used before it switched the
event structs to maps (vllm-project/vllm#42892): the same classes with `array_like=True`,
fields through `kv_cache_spec_sliding_window` (BlockStored) and `group_idx` (BlockRemoved).

Needs `msgspec` and `pyzmq` (the module imports zmq).
"""

import importlib.util
import logging
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

VLLM_VERSION = os.environ.get("LANTERN_VLLM_VERSION", "0.34.0")
MEMBER = "vllm/distributed/kv_events.py"


def cache_dir() -> Path:
    base = os.environ.get("LANTERN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lantern")
    return Path(base) / "vllm-kv-events" / VLLM_VERSION


def source_file() -> Path:
    """kv_events.py of the vLLM wheel, downloaded once (the wheel is then deleted)."""
    out = cache_dir() / "kv_events.py"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    wheels = sorted(out.parent.glob("vllm-*.whl"))
    if not wheels:
        print(f"downloading the vLLM {VLLM_VERSION} wheel (no dependencies) for its kv_events.py ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary", ":all:", f"vllm=={VLLM_VERSION}", "-d", str(out.parent)],
            check=True,
        )
        wheels = sorted(out.parent.glob("vllm-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        data = z.read(MEMBER)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    for w in wheels:
        w.unlink()
    return out


def _stub(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load():
    """The module `vllm.distributed.kv_events` (vLLM's own code, stubbed imports)."""
    name = "vllm.distributed.kv_events"
    if name in sys.modules:
        return sys.modules[name]
    for pkg in ["vllm", "vllm.config", "vllm.utils", "vllm.v1", "vllm.v1.core", "vllm.distributed"]:
        if pkg not in sys.modules:
            _stub(pkg).__path__ = []

    class KVEventsConfig:  # only used by vLLM's publisher, not by the event classes
        def __init__(self, **kw):
            self.__dict__.update(kw)

    _stub("vllm.config.kv_events", KVEventsConfig=KVEventsConfig)
    _stub("vllm.logger", init_logger=logging.getLogger)
    _stub("vllm.utils.network_utils", get_ip=None, get_tcp_uri=None,
          is_valid_ipv6_address=None, split_zmq_path=None)
    # vllm/v1/core/kv_cache_utils.py: `ExternalBlockHash: TypeAlias = bytes | int`.
    _stub("vllm.v1.core.kv_cache_utils", ExternalBlockHash=bytes | int)
    spec = importlib.util.spec_from_file_location(name, source_file())
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def array_layout(kv):
    """(KVEventBatch, {class name: array-like class}) of the pre-#42892 array layout, built
    from vLLM's own field definitions."""
    import msgspec

    def derive(cls, last_field):
        fields = []
        for f in msgspec.structs.fields(cls):
            fields.append((f.name, f.type) if f.required else (f.name, f.type, f.default))
            if f.name == last_field:
                break
        return msgspec.defstruct(cls.__name__, fields, array_like=True, omit_defaults=True,
                                 gc=False, tag=True)

    classes = {
        "BlockStored": derive(kv.BlockStored, "kv_cache_spec_sliding_window"),
        "BlockRemoved": derive(kv.BlockRemoved, "group_idx"),
        "AllBlocksCleared": derive(kv.AllBlocksCleared, None),
    }
    union = classes["BlockStored"] | classes["BlockRemoved"] | classes["AllBlocksCleared"]
    batch = msgspec.defstruct(
        "KVEventBatch",
        [(f.name, list[union] if f.name == "events" else f.type)
         if f.required else (f.name, f.type, f.default)
         for f in msgspec.structs.fields(kv.KVEventBatch)],
        array_like=True, omit_defaults=True, gc=False,
    )
    return batch, classes


def to_array_event(classes, ev):
    """The array-layout copy of one of vLLM's event objects."""
    import msgspec

    cls = classes[type(ev).__name__]
    return cls(**{f.name: getattr(ev, f.name) for f in msgspec.structs.fields(cls)})

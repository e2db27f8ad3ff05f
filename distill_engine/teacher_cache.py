"""The teacher-output cache: a frozen teacher's outputs computed once, stored compactly, reused.

In task distillation the teacher is frozen, yet the step runs it again on every batch of every
epoch (TD1: 10 epochs). A phase whose `teacher_cache` is "auto" instead reads the outputs its
losses need (`DistillGraph.teacher_taps`: the mapped layers' hidden states and attention scores,
or the logits) from a cache, and its step runs only the student.

Layout: `<run.cache_dir>/<key>/` with `cache.json` (what it holds, written last: an entry without
it is incomplete) and shards `shard-00000.safetensors`, ... of `SHARD_ROWS` consecutive rows of the
phase's dataset. A shard holds each tap of all its rows concatenated without padding (hidden
states as [sum l, H], attention scores as [sum h l^2] of each row's real l x l block, logits
[rows, C] of a pooled head, or [sum l * C] of a token or span head, whose logits are per position
like the hidden states: `graph.taps.HEAD_LOGITS`) and "lengths" [rows]. Values are stored as `run.cache_dtype` (float16 by default; the
taps lie well within its range: LayerNorm outputs and unmasked attention scores are a few tens at
most).

The key is a sha256 of everything that decides the stored numbers: the teacher's config and
weights (after fine-tuning: the weights the phase gets), the phase's encoded inputs (token ids,
segments and mask: they carry the tokenizer, vocabulary, data file, maximum length and row
count), the taps (the layer mapping) and the dtype. Any run, any phase, with the same key reuses
the entry. Which backend built it is recorded, not keyed: the teacher computes the same function
on every backend, and float16 storage rounds far more than the backends differ.

Building is resumable and atomic: each shard is written to a temporary file and renamed, so after
an interruption the next build keeps the finished shards; `cache.json` is written (atomically)
after the last. A lock file keeps two processes from building one entry at once.

Only real positions are stored, so a phase whose position losses count padding (`mask_padding =
false`, the PyTorch original's choice) cannot use the cache: the teacher's outputs at padded
positions depend on the batch's padded length (see `usable`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np

from distill_engine.bert import BERT_VARIANT, BertConfig
from distill_engine.data.encoded import EncodedDataset, padded_length
from distill_engine.errors import DistillError
from distill_engine.io import write_atomically, write_text_atomically
from distill_engine.graph import TEACHER_PREFIX, DistillGraph
from distill_engine.graph.taps import per_position_logits

CACHE_ENV = "DISTILL_ENGINE_CACHE"
FORMAT = "distill-engine-teacher-cache-1"
MANIFEST = "cache.json"
SHARD_ROWS = 2048  # rows per shard: the unit of resumption (SST-2's TD1 taps: about 160 MB a shard)
BUILD_BATCH = 64  # rows per teacher forward in the pre-pass (sorted by length: little padding)
BUILD_MULTIPLE = 8  # the pre-pass pads each forward to a multiple of this: few distinct shapes
DTYPES = {"float16": np.float16, "float32": np.float32}


class CacheError(DistillError):
    """The teacher-output cache cannot be built or read (disk space, a damaged entry)."""


class BuildStopped(Exception):
    """A stop was requested (SIGINT/SIGTERM) between two shards of a build; the finished ones stay."""


def default_root() -> Path:
    """Where caches live unless run.cache_dir says otherwise: $DISTILL_ENGINE_CACHE, else
    $XDG_CACHE_HOME/distill-engine/teacher-outputs, else ~/.cache/distill-engine/teacher-outputs."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "distill-engine" / "teacher-outputs"


def cache_root(cache_dir: str) -> Path:
    """run.cache_dir ("" means `default_root()`)."""
    return Path(cache_dir).expanduser() if cache_dir else default_root()


def usable(graph: DistillGraph | None, setting: str) -> tuple[bool, str]:
    """Whether a phase reads its teacher's outputs from a cache, and if not, why (for the log)."""
    if graph is None or not graph.needs_teacher or not graph.teacher_taps:
        return False, "the phase runs no teacher"
    if setting == "off":
        return False, "teacher_cache = \"off\""
    position = [t.kind for t in graph.terms if t.definition.positions]
    if position and not graph.mask_padding:
        return False, (f"its {', '.join(position)} count padded positions (mask_padding = false), whose teacher "
                       "outputs depend on each batch's padded length; set mask_padding = true to cache them")
    return True, ""


# --- sizes -------------------------------------------------------------------------------------------
def tap_width(name: str, config: BertConfig) -> tuple[str, int]:
    """("tokens", H) for a hidden-state tap, ("squares", heads) for attention, ("rows", C) for the
    logits of a pooled head and ("tokens", C) for those of a token or span head ([L, C] per row),
    ("values", heads) for value vectors ([heads, L, head_dim] per row)."""
    if name == "logits":
        return ("tokens" if per_position_logits(getattr(config, "head", "pooled")) else "rows"), config.num_labels
    if name.startswith("attention."):
        return "squares", config.num_attention_heads
    if name.startswith("value."):
        return "values", config.num_attention_heads
    return "tokens", config.hidden_size


def tap_sizes(name: str, config: BertConfig, lengths: np.ndarray) -> np.ndarray:
    """Stored elements of tap `name` for each row of `lengths` (int64)."""
    kind, width = tap_width(name, config)
    lengths = np.asarray(lengths, np.int64)
    if kind == "rows":
        return np.full(len(lengths), width, np.int64)
    if kind == "values":
        return config.hidden_size * lengths
    return width * (lengths if kind == "tokens" else lengths * lengths)


def estimate_bytes(lengths: np.ndarray, taps: Sequence[str], config: BertConfig, dtype: str) -> int:
    """The bytes a cache of `taps` for rows of `lengths` takes (data; headers add a few kB per shard)."""
    item = np.dtype(DTYPES[dtype]).itemsize
    return int(sum(int(tap_sizes(n, config, lengths).sum()) for n in taps) * item + 4 * len(lengths))


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def check_room(root: Path, needed: int, field: str = "run.cache_dir") -> None:
    """Refuse, in one line, a cache that the disk under `root` has no room for."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise CacheError(f"{field}: the teacher-output cache needs {human_bytes(needed)} in {root}, and its disk has "
                         f"{human_bytes(free)} free; free space, point {field} (or ${CACHE_ENV}) at a larger disk, "
                         "or set teacher_cache = \"off\" in the phases that cache")


# --- keys ----------------------------------------------------------------------------------------------
def weights_digest(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        value = np.ascontiguousarray(state[name], np.float32)
        h.update(f"{name}:{value.shape}\0".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def inputs_digest(data: EncodedDataset) -> str:
    h = hashlib.sha256()
    for array in (data.input_ids, data.token_type_ids, data.attention_mask):
        h.update(f"{array.shape}\0".encode())
        h.update(np.ascontiguousarray(array, np.int32).tobytes())
    return h.hexdigest()


def cache_key(config: BertConfig, state: dict[str, np.ndarray], data: EncodedDataset, taps: Sequence[str],
              dtype: str) -> dict:
    """What decides a cache's numbers, and its id (`key["id"]`)."""
    teacher = config.to_dict()
    if teacher.get("head") == "pooled":  # as before heads existed: the caches built then stay valid
        del teacher["head"]
    for name, bert in BERT_VARIANT.items():  # likewise BERT's values of the other families' fields
        if teacher.get(name) == bert:
            del teacher[name]
    doc = {"format": FORMAT, "teacher_config": teacher, "teacher_weights": weights_digest(state),
           "inputs": inputs_digest(data), "rows": len(data), "taps": sorted(taps), "dtype": dtype}
    return {**doc, "id": hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]}


# --- shards: safetensors files, read through memory maps ---------------------------------------------
def _write_shard(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    write_atomically(path, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp)))


_ST_DTYPES = {"F16": np.float16, "F32": np.float32, "I32": np.int32, "I64": np.int64}


def _map_shard(path: Path) -> dict[str, np.ndarray]:
    """A shard's tensors as read-only memory maps. The safetensors layout: an 8-byte little-endian
    header size, a JSON header of {name: {dtype, shape, data_offsets}}, then the data. Maps, not
    reads: a batch touches a few kB of each tap, and the page cache keeps what epochs reread."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    base = 8 + size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = np.dtype(_ST_DTYPES[info["dtype"]])
        count = (end - begin) // dtype.itemsize
        array = np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=(count,)) if count else (
            np.zeros(0, dtype))
        out[name] = array.reshape(info["shape"])
    return out


@attrs.define
class TeacherCache:
    """A complete cache entry, ready to hand a batch its teacher outputs (`outputs`)."""

    path: Path
    manifest: dict
    config: BertConfig
    shards: list[dict[str, np.ndarray]]
    lengths: np.ndarray  # [rows] real length of each row of the phase's dataset
    starts: dict[str, np.ndarray] = attrs.field(factory=dict)  # tap -> start offset of each row in its shard

    @classmethod
    def open(cls, path: Path, config: BertConfig) -> TeacherCache:
        manifest = json.loads((path / MANIFEST).read_text())
        shards = []
        for i, name in enumerate(manifest["shards"]):
            file = path / name
            if not file.is_file() or file.stat().st_size != manifest["shard_bytes"][i]:
                raise CacheError(f"{path}: shard {name} is missing or damaged; delete {path} to rebuild the cache")
            shards.append(_map_shard(file))
        lengths = np.concatenate([np.asarray(s["lengths"], np.int64) for s in shards])
        cache = cls(path, manifest, config, shards, lengths)
        rows = manifest["shard_rows"]
        for tap in manifest["taps"]:
            starts = []
            for k in range(len(shards)):
                sizes = tap_sizes(tap, config, lengths[k * rows:(k + 1) * rows])
                starts.append(np.concatenate([[0], np.cumsum(sizes)[:-1]]))
            cache.starts[tap] = np.concatenate(starts)
        return cache

    @property
    def taps(self) -> list[str]:
        return list(self.manifest["taps"])

    def outputs(self, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """{"teacher.<tap>": array in the stored dtype (float16 by default)} for the dataset rows
        `rows` of a batch `length` long: hidden states [B, length, H], attention scores [B, heads,
        length, length] and the logits of a token or span head [B, length, C] hold zeros at padded
        positions (masked out of the losses), the logits of a pooled head are [B, C].

        The stored dtype, not float32: half the bytes to fill here and to copy to an accelerator,
        which widens them there (float16 -> float32 is exact, so the numbers are the same). Per-row
        taps (hidden states, token logits, a pooled head's logits) are one gather per shard the
        batch touches; attention scores and value vectors, a square or a block per row, are copied
        row by row."""
        rows = np.asarray(rows, np.int64)
        per = self.manifest["shard_rows"]
        shard_of = rows // per
        lengths = self.lengths[rows]
        dtype = DTYPES[self.manifest["dtype"]]
        # where each real position of the batch sits: batch row, position (for the per-row taps)
        b_index = np.repeat(np.arange(len(rows)), lengths)
        t_index = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out = {}
        for tap in self.taps:
            kind, width = tap_width(tap, self.config)
            head_dim = self.config.head_dim
            shape = {"rows": (len(rows), width), "tokens": (len(rows), length, width),
                     "squares": (len(rows), width, length, length),
                     "values": (len(rows), width, length, head_dim)}[kind]
            target = np.zeros(shape, dtype)
            if kind in ("rows", "tokens"):
                # a row's tokens are `l` consecutive rows of `width` values in the shard
                first = self.starts[tap][rows] // width if kind == "tokens" else rows % per
                count = lengths if kind == "tokens" else np.ones(len(rows), np.int64)
                source = np.repeat(first, count) + (t_index if kind == "tokens" else 0)
                owner = np.repeat(shard_of, count)
                for k in np.unique(shard_of):
                    picked = owner == k
                    values = self.shards[k][tap].reshape(-1, width)[source[picked]]
                    if kind == "tokens":
                        target[b_index[picked], t_index[picked]] = values
                    else:
                        target[shard_of == k] = values
            else:
                for b, row in enumerate(rows):
                    shard, n = self.shards[row // per][tap], int(lengths[b])
                    start = int(self.starts[tap][row])
                    if kind == "values":
                        target[b, :, :n] = shard[start:start + width * n * head_dim].reshape(width, n, head_dim)
                    else:
                        target[b, :, :n, :n] = shard[start:start + width * n * n].reshape(width, n, n)
            out[TEACHER_PREFIX + tap] = target
        return out


def _rows_of(tap: str, taps_np: dict[str, np.ndarray], config: BertConfig, lengths: np.ndarray) -> list[np.ndarray]:
    """Each row's stored values of `tap` from a padded forward's output (real positions only), flat."""
    value = taps_np[tap]
    kind, _ = tap_width(tap, config)
    if kind == "rows":
        return [value[b] for b in range(len(lengths))]
    if kind == "tokens":
        return [value[b, :l].reshape(-1) for b, l in enumerate(lengths)]
    if kind == "values":
        return [value[b, :, :l].reshape(-1) for b, l in enumerate(lengths)]
    return [value[b, :, :l, :l].reshape(-1) for b, l in enumerate(lengths)]


def build_or_open(root: Path, key: dict, data: EncodedDataset, config: BertConfig,
                  forward: Callable[[dict], dict[str, np.ndarray]], *, backend: str,
                  progress: bool | None = None, stop: Callable[[], bool] | None = None,
                  say: Callable[[str], None] = print, name: str = "teacher cache") -> tuple[TeacherCache, str]:
    """Open the cache entry of `key` under `root`, building what is missing first.

    `forward(batch)` runs the teacher: it returns `Taps.named()`-style numpy arrays for a padded
    batch. Returns (cache, "reused" | "built" | "resumed"). `stop()` true between shards ends the
    build early (BuildStopped; the finished shards stay)."""
    path = root / key["id"]
    if (path / MANIFEST).is_file():
        return TeacherCache.open(path, config), "reused"
    taps, dtype = key["taps"], DTYPES[key["dtype"]]
    needed = estimate_bytes(data.lengths, taps, config, key["dtype"])
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"[{name}] another process is building {path}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / MANIFEST).is_file():  # the other process finished it
            return TeacherCache.open(path, config), "reused"
        n = len(data)
        count = -(-n // SHARD_ROWS)
        names = [f"shard-{k:05d}.safetensors" for k in range(count)]
        done = [k for k in range(count) if (path / names[k]).is_file()]
        remaining = needed * (count - len(done)) // max(count, 1)
        check_room(path, remaining)
        status = "resumed" if done else "built"
        if done:
            say(f"[{name}] resuming the cache build in {path}: {len(done)} of {count} shards are done")
        from tqdm import tqdm

        bar = tqdm(total=n, initial=min(n, len(done) * SHARD_ROWS), desc=name, unit="row",
                   disable=(None if progress is None else not progress), file=sys.stderr, dynamic_ncols=True,
                   leave=False)
        t0 = time.perf_counter()
        try:
            for k in range(count):
                if k in done:
                    continue
                if stop is not None and stop():
                    raise BuildStopped
                rows = np.arange(k * SHARD_ROWS, min(n, (k + 1) * SHARD_ROWS))
                lengths = data.lengths[rows]
                pieces: dict[str, list[np.ndarray | None]] = {t: [None] * len(rows) for t in taps}
                order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
                for c in range(0, len(rows), BUILD_BATCH):
                    chunk = order[c:c + BUILD_BATCH]
                    keep = padded_length(int(lengths[chunk].max()), BUILD_MULTIPLE, data.max_length)
                    batch = {f: v[:, :keep] for f, v in data.batch(rows[chunk]).items() if f != "labels"}
                    outputs = forward(batch)
                    for tap in taps:
                        for i, flat in zip(chunk, _rows_of(tap, outputs, config, lengths[chunk])):
                            pieces[tap][i] = np.asarray(flat, dtype)
                    bar.update(len(chunk))
                tensors = {tap: np.concatenate(parts) if parts else np.zeros(0, dtype) for tap, parts in pieces.items()}
                if "logits" in tensors and tap_width("logits", config)[0] == "rows":
                    tensors["logits"] = tensors["logits"].reshape(len(rows), -1)
                tensors["lengths"] = lengths.astype(np.int32)
                _write_shard(path / names[k], tensors)
        finally:
            bar.close()
        manifest = {**key, "rows": n, "shard_rows": SHARD_ROWS, "shards": names,
                    "shard_bytes": [(path / s).stat().st_size for s in names],
                    "bytes": sum((path / s).stat().st_size for s in names), "built_by": backend,
                    "build_seconds": round(time.perf_counter() - t0, 1), "created": time.time()}
        write_text_atomically(path / MANIFEST, json.dumps(manifest, indent=1), encoding=None, fsync=False)
    return TeacherCache.open(path, config), status

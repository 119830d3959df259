"""Reader for safetensors checkpoints, single file or sharded with an index."""

import math
import struct

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointFormatError
from ._base import Checkpoint, parse_json_object, read_shard_index

# The safetensors library refuses headers above 100 MB; so do we, before
# reading one, since a corrupted length field could otherwise ask for GBs.
_MAX_HEADER_BYTES = 100_000_000

# Bytes per element of the dtypes whose byte count we check against the
# declared shape. Sub-byte and exotic dtypes are only range-checked.
_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}


# safetensors dtype names (little-endian on disk, as x86 and ARM are) that
# torch can view a raw byte buffer as.
_TORCH_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}


def read_layout(path):
    """Read and validate the header of a safetensors file.

    The header is an 8-byte little-endian length followed by that many bytes
    of JSON. Checking it here, before ``safe_open``, keeps the error messages
    ours and refuses absurd headers before anything is allocated.

    Parameters
    ----------
    path : pathlib.Path
        A ``.safetensors`` file.

    Returns
    -------
    data_start : int
        Byte offset of the data section in the file.
    layout : dict of str to tuple
        Tensor name to ``(dtype, shape, begin, end)`` (offsets within the
        data section), in order of data offset (on-disk order).

    Raises
    ------
    CheckpointFormatError
        The file is truncated, its header is not valid JSON, or a tensor's
        byte range lies outside the file or disagrees with its shape.
    """
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointFormatError(
                f"'{path}' is {file_size} bytes long, too short to be a "
                "safetensors file (truncated download?)."
            )
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(file_size - 8, _MAX_HEADER_BYTES):
            raise CheckpointFormatError(
                f"'{path}' declares a {header_size}-byte header but the file "
                f"is {file_size} bytes long: truncated or not a safetensors file."
            )
        raw = f.read(header_size)
    header = parse_json_object(raw, path, "header")

    data_size = file_size - 8 - header_size
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end, shape = _check_entry(path, name, info, data_size)
        entries.append((begin, end, name, info["dtype"], shape))
    entries.sort()
    return 8 + header_size, {
        name: (dtype, shape, begin, end) for begin, end, name, dtype, shape in entries
    }


def _is_count(value):
    # JSON true/false parse to bools, which are ints to Python.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(path, name, info, data_size):
    """Validate one tensor entry of a header; return (begin, end, shape)."""
    try:
        dtype = info["dtype"]
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        valid = (
            isinstance(dtype, str)
            and all(_is_count(d) for d in shape)
            and _is_count(begin)
            and _is_count(end)
            and begin <= end
        )
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid:
        raise CheckpointFormatError(
            f"'{path}' has a corrupted header entry for tensor {name!r}: {info!r}."
        )
    if end > data_size:
        raise CheckpointFormatError(
            f"Tensor {name!r} in '{path}' ends at byte {end} of the data but "
            f"the file only holds {data_size} data bytes: truncated file."
        )
    n_elements = math.prod(shape)
    itemsize = _ITEMSIZE.get(dtype)
    if itemsize is not None and n_elements * itemsize != end - begin:
        raise CheckpointFormatError(
            f"Tensor {name!r} in '{path}' claims shape {shape} ({n_elements} "
            f"{dtype} elements) but spans {end - begin} bytes: corrupted header."
        )
    return begin, end, shape


class SafetensorsCheckpoint(Checkpoint):
    """A safetensors checkpoint: one file, or shards listed in an index.

    Tensors are read with ``safetensors.safe_open`` (memory-mapped), so only
    the tensor being yielded is materialised.

    Parameters
    ----------
    source : str
        The path or hub id exactly as the user gave it.
    path : pathlib.Path
        The ``.safetensors`` file or the model directory.
    file : pathlib.Path
        The ``.safetensors`` file, or a ``model.safetensors.index.json``.
    config : dict
        The model configuration.
    config_file : pathlib.Path or None, default=None
        The file ``config`` was read from.
    """

    format = "safetensors"

    def __init__(self, source, path, file, config, config_file=None):
        if file.name.endswith(".index.json"):
            weight_map, shards = read_shard_index(file)
            files = list(shards.values())
        else:
            weight_map, files = None, [file]
        super().__init__(source, path, files, config, config_file)
        # Per file: data offset, and tensor name -> (dtype, shape, begin,
        # end), both in on-disk order.
        self._layouts = {f: read_layout(f) for f in files}
        self._shapes = {
            f: {name: entry[1] for name, entry in layout.items()}
            for f, (_, layout) in self._layouts.items()
        }
        if weight_map is not None:
            self._check_weight_map(file, weight_map, shards)

    def _check_weight_map(self, index_file, weight_map, shards):
        for name, shard in weight_map.items():
            if name not in self._shapes[shards[shard]]:
                raise CheckpointFormatError(
                    f"'{index_file}' places tensor {name!r} in '{shard}', which "
                    "does not contain it: the index and shards disagree."
                )

    def tensor_names(self):
        return [name for shapes in self._shapes.values() for name in shapes]

    def tensor_shape(self, name):
        for shapes in self._shapes.values():
            if name in shapes:
                return shapes[name]
        raise self._unknown_tensor(name)

    def iter_tensors(self, names=None):
        wanted = self._select(names)
        for file, shapes in self._shapes.items():
            todo = [n for n in shapes if wanted is None or n in wanted]
            if not todo:
                continue
            data_start, layout = self._layouts[file]
            # Plain reads into a fresh buffer, not safetensors' mmap: mapped
            # pages of a 10 GB shard stay in the process's RSS (and count
            # against container limits) until the file is closed, so peak
            # memory would follow the shard size instead of the largest
            # matrix.
            with open(file, "rb", buffering=0) as handle:
                for name in todo:
                    yield name, self._read(file, handle, data_start, name, layout[name])

    @staticmethod
    def _read(file, handle, data_start, name, entry):
        dtype, shape, begin, end = entry
        torch_dtype = _TORCH_DTYPES.get(dtype)
        if torch_dtype is None:  # exotic dtype: let safetensors decode it
            try:
                with safe_open(str(file), framework="pt", device="cpu") as f:
                    return f.get_tensor(name).clone()
            except SafetensorError as exc:
                raise CheckpointFormatError(f"Cannot read '{file}': {exc}.") from exc
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        handle.seek(data_start + begin)
        if handle.readinto(memoryview(buffer.numpy())) != end - begin:
            raise CheckpointFormatError(
                f"'{file}' ended while reading tensor {name!r}: the file was "
                "truncated or modified while it was being read."
            )
        return buffer.view(torch_dtype).reshape(shape)

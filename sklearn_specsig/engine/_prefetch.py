"""A reader thread that reads and hashes the next tensors ahead of the solver."""

import queue
import threading

from ..store import tensor_digest

#: Tensors read ahead of the one being decomposed.
PREFETCH = 2


def prefetched(iterator, depth=PREFETCH):
    """Yield ``(name, tensor, content_digest)`` from a reader thread.

    Reading (safetensors, GGUF dequantisation) and hashing (BLAKE3) release
    the GIL, so they overlap with the eigensolver of the previous tensor.
    An exception in the reader is raised in the consumer; stopping the
    consumer early stops the reader.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for name, tensor in iterator:
                item = (name, tensor, tensor_digest(tensor))
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # re-raised in the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="specsig-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)

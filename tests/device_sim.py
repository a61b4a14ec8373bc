"""A simulated accelerator for CPU-only machines: catches the tensors that would be on the wrong device on a GPU.

On a machine without CUDA every tensor is on the CPU, so code that builds a tensor without ``device=`` and
mixes it with the model's tensors runs fine here and crashes on a GPU ("Expected all tensors to be on the
same device"). :class:`SimulatedDevice` is a ``TorchFunctionMode`` that keeps a *host* tag on the tensors a
GPU run would have on the CPU and raises :class:`DeviceMismatch` where such a tensor meets a device tensor:

* host: factories called without ``device=`` (or with the string ``"cpu"``), ``torch.tensor`` /
  ``as_tensor`` / ``from_numpy`` of Python or NumPy data, ``.cpu()`` and ``.to("cpu")``, and results
  computed from host tensors only (a batch before Lightning moves it, the data loader's collate);
* device: everything else: the model's parameters and buffers, tensors made with ``device=<torch.device>``
  or ``.to(<torch.device or tensor>)``, gradients, results with any device input. The ``.device`` of a host
  tensor (e.g. ``next(model.parameters()).device`` after Lightning moved the model back to the CPU) stands
  for the host; ``as_device="cpu"`` makes the *string* ``"cpu"`` stand for the accelerator (an inference
  session built with ``device="cpu"`` playing one built with ``"cuda"``).

An operation mixing a device tensor with a host tensor of one or more dimensions raises (0-d host tensors
are allowed, as CUDA allows CPU scalars), as do ``.numpy()`` of a device tensor and a host tensor reaching
the model. Operations inside Lightning / torchmetrics themselves are not checked (their own device
handling is theirs). It is a model of CUDA's rules, stricter in one place: indexing a device tensor with a
host index tensor is flagged (CUDA accepts it, but the transfer is a sync point).

:class:`OnDevice` is the training-side check: a Lightning callback asserting that the parameters and the
batch are on the device (and, under the simulation, not host tensors) at every step.

Example:
    >>> with SimulatedDevice():
    ...     scores = torch.zeros(3)                  # host: no device=
    ...     scores += layer.weight[0]                # raises DeviceMismatch (layer made before the mode)
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch.overrides import TorchFunctionMode

_HOST = "_simulated_host"
_FACTORIES = {
    torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.eye, torch.rand, torch.randn,
    torch.randint, torch.randperm, torch.linspace, torch.logspace, torch.empty_strided, torch.scalar_tensor,
    torch.tensor, torch.as_tensor, torch.from_numpy, torch.asarray,
}
_QUIET = {"__get__", "__set__", "__repr__", "__format__", "tolist", "item", "__len__", "__bool__", "__int__",
          "__float__", "__index__", "size", "dim", "numel", "element_size", "data_ptr", "is_floating_point",
          "__hash__", "requires_grad_", "register_hook", "untyped_storage", "storage_offset", "stride",
          "is_contiguous", "__reduce_ex__", "__deepcopy__", "__getstate__", "__setstate__", "_version",
          "__array_wrap__", "_has_compatible_shallow_copy_type", "is_same_size"}
_UNCHECKED_PACKAGES = ("/lightning/", "/lightning_fabric/", "/torchmetrics/", "/lightning_utilities/",
                       "/device_sim.py")


class DeviceMismatch(RuntimeError):
    """A host (CPU) tensor met a device tensor: this line would fail on a GPU."""


def is_host(t: torch.Tensor) -> bool:
    return bool(getattr(t, _HOST, False))


def mark_host(t):
    """Tag ``t`` (and tensors inside tuples / lists / dicts) as a host tensor; returns ``t``."""
    for x in _tensors(t):
        setattr(x, _HOST, True)
    return t


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _is_host_device(device) -> bool:
    """A device argument a GPU run would also resolve to the CPU: none, or the literal string ``cpu``."""
    if device is None:
        return True
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def _caller() -> str:
    """The innermost frame outside torch (the line that issued the operation)."""
    frame = sys._getframe(2)
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    while frame is not None and (frame.f_code.co_filename.startswith(torch_dir)
                                 or frame.f_code.co_filename.endswith("device_sim.py")):
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


class SimulatedDevice(TorchFunctionMode):
    """See the module docstring. ``mismatches`` lists every flagged call (``strict=False`` records, no raise).

    ``as_device="cpu"``: the device *string* ``"cpu"`` stands for the accelerator (an inference session built
    with ``device="cpu"`` plays the part of one built with ``"cuda"``); ``.cpu()`` still means the host.
    """

    def __init__(self, strict: bool = True, as_device: str | None = None):
        super().__init__()
        self.strict, self.as_device = strict, as_device
        self.mismatches: list[str] = []
        self._host_devices: list[torch.device] = []  # the ``.device`` objects handed out for host tensors

    def _device_is_host(self, device) -> bool:
        """A device argument a GPU run would resolve to the CPU: none, the string ``cpu``, or the ``.device`` of
        a host tensor (e.g. ``next(model.parameters()).device`` after Lightning moved the model back)."""
        if any(device is d for d in self._host_devices):
            return True
        if self.as_device is not None and isinstance(device, str) and device == self.as_device:
            return False  # e.g. an InferenceSession built with device="cpu" stands for "cuda"
        return _is_host_device(device)

    def _flag(self, what: str) -> None:
        where = _caller()
        if any(p in where for p in _UNCHECKED_PACKAGES):
            return
        msg = f"{what} at {where}"
        self.mismatches.append(msg)
        if self.strict:
            raise DeviceMismatch(msg)

    def _output_host(self, func, args, kwargs, inputs) -> bool:
        name = getattr(func, "__name__", "")
        if func in _FACTORIES:
            data = args[0] if args else kwargs.get("data")
            device = kwargs.get("device")
            if func in (torch.as_tensor, torch.asarray) and isinstance(data, torch.Tensor) and device is None:
                return is_host(data)
            return self._device_is_host(device)
        if name == "cpu":
            return True
        if name in ("cuda", "to_device"):
            return False
        if name == "to":
            targets = [a for a in (*args[1:], kwargs.get("device"), kwargs.get("other")) if a is not None]
            for a in targets:
                if isinstance(a, torch.Tensor):
                    return is_host(a)
                if isinstance(a, (torch.device, str)):
                    return self._device_is_host(a)
            return is_host(args[0])
        return bool(inputs) and all(is_host(t) for t in inputs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__self__", None)
        if name == "__get__" and owner is torch.Tensor.device:
            device = func(*args, **kwargs)
            if is_host(args[0]):  # hand out a device object we recognise as the host's
                device = torch.device(device.type, device.index)
                self._host_devices.append(device)
            return device
        if name == "__set__" and owner is torch.Tensor.data:  # ``param.data = t`` (Module.to / .cpu keep the Parameter object)
            func(*args, **kwargs)
            setattr(args[0], _HOST, is_host(args[1]))
            return None
        if name in _QUIET:
            return func(*args, **kwargs)
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        if name in ("numpy", "__array__") and inputs and not is_host(inputs[0]):
            self._flag(".numpy() of a device tensor (call .cpu() first)")
        elif name not in ("to", "cpu", "cuda", "copy_", "new_tensor") and func not in _FACTORIES:
            host = [t for t in inputs if is_host(t) and t.dim() > 0]  # 0-d host tensors are fine (CPU scalars)
            if host and any(not is_host(t) for t in inputs):
                shapes = [tuple(t.shape) for t in host]
                self._flag(f"{name}: host tensor(s) of shape {shapes} with device tensors")
        out = func(*args, **kwargs)
        if name == "__iter__":  # the rows of a host tensor are host tensors
            rows = list(out)
            return iter(mark_host(rows) if inputs and is_host(inputs[0]) else rows)
        host = self._output_host(func, args, kwargs, inputs)
        if name in ("to", "cpu", "cuda") and out is args[0] and host != is_host(out):
            out = out.clone()  # a transfer: a GPU run makes a new tensor in new memory (here .to returned its input)
        if host:
            mark_host(out)
        return out


class OnDevice(L.Callback):
    """A Lightning callback that checks, at every training step, that every parameter and every batch tensor is
    on ``device`` (``cpu`` | ``cuda``); ``steps`` counts the checked steps. Under :class:`SimulatedDevice` a
    tensor tagged as a host tensor is off the simulated accelerator too (what ``device="cpu"`` cannot tell).

    Config: ``+callbacks.on_device={_target_: device_sim.OnDevice, device: cuda}``.
    """

    def __init__(self, device: str):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"OnDevice: device must be cpu or cuda, got {device!r}")
        self.device, self.steps = device, 0

    def _off(self, t: torch.Tensor) -> bool:
        return t.device.type != self.device or is_host(t)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        off = [n for n, p in pl_module.named_parameters() if self._off(p)]
        assert not off, f"parameters not on {self.device} during training: {off[:5]}"
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        off = {k: str(v.device) + (" (host)" if is_host(v) else "") for k, v in tensors.items() if self._off(v)}
        assert not off, f"batch tensors not on {self.device} during training: {off}"
        self.steps += 1

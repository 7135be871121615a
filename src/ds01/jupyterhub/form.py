"""The spawner's options form: pure HTML from ds01d's answers (``/v1/images``,
``/v1/gpus``, ``/v1/limits`` for the user), no JupyterHub and no I/O.

It offers what the user may ask for: no GPU, one MIG profile (one MIG device per container),
or whole GPUs up to ``max_gpus_per_container``; the images of ds01's registry present on the
host; and shows the user's usage against their quota and what is free now. Whether a choice
fits is ds01d's decision at start: a refusal comes back to this form with ds01's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any


def jupyter_images(listed: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Registry images present on the host, the starter (JupyterLab) image first."""
    present = [i for i in listed or () if i.get("present") and not i.get("own")]
    present.sort(key=lambda i: (not i.get("starter"), str(i.get("name"))))
    return [str(i["name"]) for i in present]


def _free(devices: Sequence[Mapping[str, Any]]) -> tuple[int, dict[str, int]]:
    """Free whole GPUs and free MIG devices per profile."""
    whole = 0
    mig: dict[str, int] = {}
    for device in devices:
        if device.get("holder") is not None or device.get("reserved"):
            continue
        if device.get("kind") == "mig" and device.get("profile"):
            mig[str(device["profile"])] = mig.get(str(device["profile"]), 0) + 1
        elif device.get("kind") == "gpu":
            whole += 1
    return whole, mig


def _profiles(devices: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(
        {str(d["profile"]) for d in devices if d.get("kind") == "mig" and d.get("profile")}
    )


def _number(value: Any) -> str:
    return "unlimited" if value is None else f"{round(float(value), 2):g}"


def device_options(
    gpus: Mapping[str, Any], limits: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(value, label) of every device choice the user's limits allow."""
    devices = list(gpus.get("devices") or ())
    allowed = limits.get("limits") or {}
    whole_free, mig_free = _free(devices)
    choices = [("none", "No GPU")]
    if allowed.get("allow_mig", True):
        for profile in _profiles(devices):
            free = mig_free.get(profile, 0)
            choices.append((f"mig:{profile}", f"One {profile} MIG slice ({free} free now)"))
    if allowed.get("allow_full_gpu", True):
        total = sum(1 for d in devices if d.get("kind") == "gpu")
        cap = allowed.get("max_gpus_per_container")
        most = total if cap is None else min(total, int(float(cap)))
        for n in range(1, most + 1):
            label = f"{n} whole GPU{'s' if n > 1 else ''} ({whole_free} free now)"
            choices.append((f"gpus:{n}", label))
    return choices


def render(
    images: Sequence[str],
    default_image: str,
    gpus: Mapping[str, Any],
    limits: Mapping[str, Any],
) -> str:
    """The form's HTML (JupyterHub wraps it in its page and its own submit button)."""
    usage = limits.get("usage") or {}
    allowed = limits.get("limits") or {}
    image_options = "".join(
        f'<option value="{escape(name)}"{" selected" if name == default_image else ""}>'
        f"{escape(name)}</option>"
        for name in images
    )
    device_choices = "".join(
        f'<option value="{escape(value)}">{escape(label)}</option>'
        for value, label in device_options(gpus, limits)
    )
    total = float(gpus.get("total_gpu_equivalents", 0))
    free = total - float(gpus.get("allocated_gpu_equivalents", 0))
    quota = (
        f"You use {_number(usage.get('gpu_equivalents', 0))} of "
        f"{_number(allowed.get('gpu_limit'))} GPU-equivalents in "
        f"{int(usage.get('containers', 0))} container(s). "
        f"Free now: {_number(free)} of {_number(total)} GPU-equivalents; "
        f"{int(gpus.get('queued_requests', 0))} request(s) waiting."
    )
    return (
        '<div class="form-group" id="ds01-form">'
        f'<p id="ds01-usage">{escape(quota)}</p>'
        '<label for="ds01-image">Image</label>'
        f'<select class="form-control" id="ds01-image" name="image">{image_options}</select>'
        '<label for="ds01-device">GPU</label>'
        f'<select class="form-control" id="ds01-device" name="device">{device_choices}</select>'
        "<p>When no device is free, your server waits in ds01's queue and starts by itself "
        "when its turn comes.</p>"
        "</div>"
    )


__all__ = ["device_options", "jupyter_images", "render"]
